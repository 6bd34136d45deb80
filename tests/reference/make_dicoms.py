#!/usr/bin/env python3
"""Writes the DICOM test files the validation and privacy tests use, with pydicom, into DIR.

Each synthetic file is a small chest-like radiograph (synth.py) wrapped in a CR or DX object.
`cr_phi.dcm` is filled with distinctive protected health information, the values of which (and
those of the real pydicom-data chest radiograph RG1) are written to DIR/phi.json, so the privacy
test can look for every one of them everywhere xcam writes.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "tools"))
import synth  # noqa: E402

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
MR = "1.2.840.10008.5.1.4.1.1.4"

PHI = {
    "PatientName": "Zebulon^Quixotic^Marmaduke",
    "PatientID": "MRN-73519-QX",
    "PatientBirthDate": "19450817",
    "OtherPatientIDs": "ALT-ID-99817",
    "PatientAddress": "42 Wallaby Way, Sydney",
    "AccessionNumber": "ACC-8842197",
    "StudyID": "STUDY-XYZZY-7",
    "StudyDate": "20240229",
    "StudyDescription": "Chest for Mr Quixotic",
    "ReferringPhysicianName": "Dr^Heliotrope^Bartholomew",
    "InstitutionName": "St Swithin Memorial Infirmary",
    "StationName": "XRAYROOM-PLUGH-3",
    "DeviceSerialNumber": "SN-FROBOZZ-4417",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77777123456789",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.88888123456789",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.99999123456789",
}


def base(sop_class=CR, modality="CR", pixels=None, photometric="MONOCHROME2", frames=1, **extra):
    img = pixels if pixels is not None else synth.draw(np.random.default_rng(5), 256, 224)[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = extra.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = extra.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    data = (img * 4095).round().astype(np.uint16)
    if photometric == "MONOCHROME1":
        data = 4095 - data
    if frames > 1:
        ds.NumberOfFrames = frames
        data = np.stack([data] * frames)
    ds.PixelData = data.tobytes()
    for k, v in extra.items():
        setattr(ds, k, v)
    return ds


def save(ds, path: Path, preamble=True):
    ds.save_as(path, enforce_file_format=True)
    if not preamble:
        path.write_bytes(path.read_bytes()[128:])


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    phi = base(**PHI)
    phi.add_new(0x00091010, "LO", "PRIVATE-CREATOR-GRUE")
    phi.add_new(0x00091011, "LO", "private note about Quixotic")
    save(phi, out / "cr_phi.dcm")
    save(base(sop_class=DX_PRESENTATION, modality="DX", photometric="MONOCHROME1"), out / "dx_mono1.dcm")
    save(base(), out / "cr_no_preamble.dcm", preamble=False)
    save(base(ViewPosition="LL", BodyPartExamined="ABDOMEN", BurnedInAnnotation="YES"), out / "cr_warnings.dcm")
    save(base(frames=2), out / "cr_two_frames.dcm")
    save(base(sop_class=DX_PROCESSING, modality="DX"), out / "dx_for_processing.dcm")
    save(base(sop_class=MR, modality="MR"), out / "mr.dcm")
    no_modality = base()
    del no_modality.Modality
    save(no_modality, out / "cr_no_modality.dcm")
    rgb = base()
    rgb.PhotometricInterpretation, rgb.SamplesPerPixel, rgb.PlanarConfiguration = "RGB", 3, 0
    rgb.BitsAllocated, rgb.BitsStored, rgb.HighBit = 8, 8, 7
    rgb.PixelData = np.zeros((rgb.Rows, rgb.Columns, 3), np.uint8).tobytes()
    save(rgb, out / "cr_rgb.dcm")
    # JPEG Extended (12-bit) is a syntax dicom-rs cannot decode; the pixel data is a stand-in.
    from pydicom.encaps import encapsulate  # noqa: PLC0415

    ext = base(transfer_syntax="1.2.840.10008.1.2.4.51")
    ext.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ext["PixelData"].VR = "OB"
    save(ext, out / "cr_jpeg_extended.dcm")
    whole = (out / "cr_phi.dcm").read_bytes()
    (out / "cr_truncated.dcm").write_bytes(whole[: len(whole) // 2])

    values = list(PHI.values()) + ["PRIVATE-CREATOR-GRUE", "Quixotic"]
    import data_store  # noqa: PLC0415 - pydicom-data's package

    rg1 = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
    real = pydicom.dcmread(rg1, stop_before_pixels=True)
    for keyword in ["PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                    "InstitutionName", "StudyDate", "AccessionNumber", "ReferringPhysicianName", "StationName"]:
        v = str(getattr(real, keyword, "") or "").strip()
        if len(v) >= 6:
            values.append(v)
    (out / "phi.json").write_text(json.dumps({"values": values, "rg1_dir": str(rg1.parent)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
