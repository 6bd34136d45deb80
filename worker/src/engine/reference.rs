//! The out-of-distribution score: how far an image's pooled backbone features lie from those of
//! the images the model was trained on (the Mahalanobis distance to the mean, with the
//! covariance the bundle's reference carries). It reuses the activations the explanation
//! computed anyway: one K-vector mean and a K×K product per image.

use tch::{Device, Kind, Tensor};
use xcam_shared::bundle::Bundle;

use super::EngineError;

/// A bundle's reference, on the model's device; its threshold stays in the manifest.
#[derive(Debug)]
pub struct Reference {
    mean: Tensor,
    precision: Tensor,
}

impl Reference {
    /// The bundle's reference, if it has one.
    pub fn load(bundle: &Bundle, device: Device) -> Result<Option<Self>, EngineError> {
        let Some(spec) = &bundle.manifest.reference else {
            return Ok(None);
        };
        let error = |reason: String| EngineError::Model {
            bundle: bundle.dir.display().to_string(),
            reason,
        };
        let path = bundle.dir.join(&spec.file);
        let tensors = Tensor::read_npz(&path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let named = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.to_kind(Kind::Float).to_device(device))
                .ok_or_else(|| error(format!("{} holds no {name:?} array", spec.file)))
        };
        let (mean, precision) = (named("mean")?, named("precision")?);
        let k = mean.size();
        if k.len() != 1 || precision.size() != [k[0], k[0]] {
            return Err(error(format!(
                "{}: mean is {:?} and precision {:?}; they must be K and K×K",
                spec.file,
                mean.size(),
                precision.size()
            )));
        }
        Ok(Some(Self { mean, precision }))
    }

    /// One score per image of a batch of activations (N×K×h×w).
    pub fn scores(&self, activations: &Tensor) -> Result<Vec<f32>, EngineError> {
        let pooled = activations.mean_dim(&[2i64, 3][..], false, Kind::Float);
        if pooled.size()[1] != self.mean.size()[0] {
            return Err(EngineError::Inference(format!(
                "the reference has {} features, the target layer {}",
                self.mean.size()[0],
                pooled.size()[1]
            )));
        }
        let d = pooled - &self.mean;
        let squared =
            (d.matmul(&self.precision) * &d).sum_dim_intlist(&[1i64][..], false, Kind::Float);
        Vec::<f32>::try_from(squared.clamp_min(0.0).sqrt().to_device(Device::Cpu))
            .map_err(|e| EngineError::Inference(e.to_string()))
    }
}
