//! What to explain: the CAM method and which labels. Parsed where requests arrive (the API,
//! the CLI) and carried in jobs as strings.

use std::{fmt, str::FromStr};

/// A CAM method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Selvaraju et al.: channel weights are the spatial mean of the gradient.
    GradCam,
    /// Chattopadhyay et al.: weights from second- and third-order terms of the gradient.
    GradCamPlusPlus,
    /// Draelos & Carin: element-wise gradient × activation, no averaging.
    HiResCam,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::GradCam, Method::GradCamPlusPlus, Method::HiResCam];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcam++",
            Method::HiResCam => "hirescam",
        }
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
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "gradcam" => Ok(Method::GradCam),
            "gradcam++" | "gradcampp" | "gradcamplusplus" => Ok(Method::GradCamPlusPlus),
            "hirescam" => Ok(Method::HiResCam),
            _ => Err(format!(
                "unknown method {s:?}: use gradcam, gradcam++ or hirescam"
            )),
        }
    }
}

/// Which labels to explain for an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelSelection {
    /// The most probable label.
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

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "top1" => Ok(Self::Top1),
            "positive" => Ok(Self::Positive),
            "all" => Ok(Self::All),
            list => Ok(Self::Named(
                list.split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect(),
            )),
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

impl LabelSelection {
    /// Checks named labels against the model's; returns the selection unchanged if all exist.
    pub fn validate(&self, labels: &[String]) -> Result<(), String> {
        if let Self::Named(names) = self {
            if names.is_empty() {
                return Err("no label names given".into());
            }
            for n in names {
                if !labels.contains(n) {
                    return Err(format!(
                        "unknown label {n:?}; the model's labels are: {}",
                        labels.join(", ")
                    ));
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
