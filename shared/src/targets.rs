//! What to explain: the CAM method and which labels. Parsed once where requests arrive (the
//! API, the CLI) and carried typed in jobs; on the wire both are plain strings (`gradcam++`,
//! `top1`, `nodule,opacity`), so payloads written before they were typed still decode.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type},
};

/// A CAM method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
pub enum Method {
    /// Selvaraju et al.: channel weights are the spatial mean of the gradient.
    #[default]
    #[serde(rename = "gradcam")]
    GradCam,
    /// Chattopadhyay et al.: weights from second- and third-order terms of the gradient.
    #[serde(rename = "gradcam++")]
    GradCamPlusPlus,
    /// Draelos & Carin: element-wise gradient × activation, no averaging.
    #[serde(rename = "hirescam")]
    HiResCam,
    /// Fu et al.: channel weights are the gradient averaged with the activation as weights.
    #[serde(rename = "xgradcam")]
    XGradCam,
    /// Jiang et al.: element-wise positive gradient × activation.
    #[serde(rename = "layercam")]
    LayerCam,
    /// Muhammad & Yeasin: the first principal component of the activations. Gradient-free and
    /// not class-discriminative: every label of an image gets the same map.
    #[serde(rename = "eigencam")]
    EigenCam,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::HiResCam,
        Method::XGradCam,
        Method::LayerCam,
        Method::EigenCam,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcam++",
            Method::HiResCam => "hirescam",
            Method::XGradCam => "xgradcam",
            Method::LayerCam => "layercam",
            Method::EigenCam => "eigencam",
        }
    }

    /// Whether the map needs the gradient of the label's score (a backward through the head).
    pub fn needs_gradient(self) -> bool {
        self != Method::EigenCam
    }

    /// The methods' names, for messages and help.
    pub fn names() -> String {
        Method::ALL.map(Method::as_str).join(", ")
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Method::ALL.into_iter().find(|m| m.as_str() == s) {
            Some(m) => Ok(m),
            None => Err(format!(
                "unknown method {s:?}: use one of {}",
                Method::names()
            )),
        }
    }
}

crate::status::text_enum! {
    /// Which faithfulness measures each map gets. Each costs forward passes, so they are asked
    /// for.
    #[derive(Default)]
    Faithfulness {
        /// None: the map costs one forward and one head backward.
        #[default]
        Off = "off",
        /// Confidence drop and increase: one more forward per explained label.
        Drop = "drop",
        /// Also deletion and insertion AUC: 2 × (steps + 1) more forwards per explained label.
        Full = "full",
    }
}

/// Why a label selection does not fit a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// `unknown_label`: a name the model does not have.
    #[error("{0}")]
    Unknown(String),
    /// `invalid_labels`: no names, or one named twice.
    #[error("{0}")]
    Repeated(String),
}

impl LabelError {
    pub fn code(&self) -> &'static str {
        match self {
            LabelError::Unknown(_) => "unknown_label",
            LabelError::Repeated(_) => "invalid_labels",
        }
    }
}

/// Which labels to explain for an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LabelSelection {
    /// The most probable label.
    #[default]
    Top1,
    /// Every label above its threshold (the top label if none is).
    Positive,
    /// Every label.
    All,
    /// These labels, by name.
    Named(Vec<String>),
}

impl FromStr for LabelSelection {
    type Err = String;

    /// Strict: names are separated by bare commas, none empty, none padded with spaces, so
    /// what the API document's pattern calls valid is exactly what parses. A name given twice
    /// counts once (the pattern cannot say "no repeats"), so a selection never asks for more
    /// maps than the model has labels.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "top1" => Ok(Self::Top1),
            "positive" => Ok(Self::Positive),
            "all" => Ok(Self::All),
            "" => Err("no labels given: use top1, positive, all, or label names".into()),
            list => list
                .split(',')
                .map(|name| {
                    if name.is_empty() || name.trim() != name {
                        Err(format!(
                            "{list:?}: label names are separated by single commas, without spaces"
                        ))
                    } else {
                        Ok(name.to_owned())
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|names| {
                    let mut unique: Vec<String> = Vec::with_capacity(names.len());
                    for name in names {
                        if !unique.contains(&name) {
                            unique.push(name);
                        }
                    }
                    Self::Named(unique)
                }),
        }
    }
}

impl fmt::Display for LabelSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Top1 => f.write_str("top1"),
            Self::Positive => f.write_str("positive"),
            Self::All => f.write_str("all"),
            Self::Named(names) => f.write_str(&names.join(",")),
        }
    }
}

impl Serialize for LabelSelection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LabelSelection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl PartialSchema for LabelSelection {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`top1`, `positive`, `all`, or label names separated by commas",
            ))
            .into()
    }
}

impl ToSchema for LabelSelection {}

impl LabelSelection {
    /// Checks named labels against the model's: each must exist and be named once, so a
    /// selection never asks for more maps than the model has labels.
    pub fn validate(&self, labels: &[String]) -> Result<(), LabelError> {
        if let Self::Named(names) = self {
            if names.is_empty() {
                return Err(LabelError::Repeated("no label names given".into()));
            }
            for (i, n) in names.iter().enumerate() {
                if !labels.contains(n) {
                    return Err(LabelError::Unknown(format!(
                        "unknown label {n:?}; the model's labels are: {}",
                        labels.join(", ")
                    )));
                }
                if names[..i].contains(n) {
                    return Err(LabelError::Repeated(format!(
                        "the label {n:?} is named more than once"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Indices of the labels to explain, given one image's probabilities.
    pub fn pick(&self, probabilities: &[f32], thresholds: &[f32], labels: &[String]) -> Vec<usize> {
        let top = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        match self {
            Self::Top1 => vec![top],
            Self::All => (0..probabilities.len()).collect(),
            Self::Positive => {
                let positive: Vec<usize> = (0..probabilities.len())
                    .filter(|&i| probabilities[i] >= thresholds[i])
                    .collect();
                if positive.is_empty() {
                    vec![top]
                } else {
                    positive
                }
            }
            Self::Named(names) => names
                .iter()
                .filter_map(|n| labels.iter().position(|l| l == n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_named_twice_counts_once() {
        assert_eq!(
            "nodule,opacity,nodule".parse::<LabelSelection>(),
            Ok(LabelSelection::Named(vec![
                "nodule".into(),
                "opacity".into()
            ]))
        );
    }
}
