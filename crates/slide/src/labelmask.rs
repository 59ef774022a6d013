//! PANDA label masks: the segPANDA200 classes and the Radboud / Karolinska schemes that map mask values to them.

use image::GrayImage;

/// The six segPANDA200 classes (the Radboud label scheme).
pub const SEGPANDA_CLASSES: [&str; 6] =
    ["background", "stroma", "benign epithelium", "Gleason 3", "Gleason 4", "Gleason 5"];

/// How a PANDA label mask's values map to the six segPANDA200 classes.
///
/// - Radboud masks already use them: 0 background, 1 stroma, 2 benign epithelium,
///   3/4/5 Gleason pattern 3/4/5.
/// - Karolinska masks use 0 background, 1 benign tissue (stroma and epithelium together),
///   2 cancer: 0 → 0, 1 → 1 (stroma; Karolinska does not separate the two), and 2 → the class of
///   the slide's primary Gleason pattern (the first number of `gleason_score`, e.g. `4+3` → 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelScheme {
    /// Radboud: values 0–5 kept as they are.
    Radboud,
    /// Karolinska: values 0–2; cancer becomes `cancer_class` (3–5), if the slide has a grade.
    Karolinska {
        /// Class for cancer pixels; `None` when the slide is negative or ungraded.
        cancer_class: Option<u8>,
    },
}

impl LabelScheme {
    /// The scheme for a PANDA `data_provider` (`radboud` / `karolinska`) and `gleason_score`.
    pub fn parse(provider: &str, gleason_score: Option<&str>) -> Result<Self, String> {
        match provider.trim().to_ascii_lowercase().as_str() {
            "radboud" => Ok(Self::Radboud),
            "karolinska" => {
                let cancer_class = match gleason_score.map(str::trim) {
                    None | Some("") | Some("negative") | Some("0+0") => None,
                    Some(s) => {
                        let primary = s.split('+').next().and_then(|p| p.trim().parse::<u8>().ok());
                        match primary {
                            Some(p @ 3..=5) => Some(p),
                            _ => return Err(format!("gleason_score {s:?} is not of the form 3+4 (patterns 3–5)")),
                        }
                    }
                };
                Ok(Self::Karolinska { cancer_class })
            }
            other => Err(format!("data provider {other:?} is neither radboud nor karolinska")),
        }
    }

    /// Maps a mask in place to segPANDA200 classes; a value outside the scheme is an error.
    pub fn apply(&self, mask: &mut GrayImage) -> Result<(), String> {
        let table: [Option<u8>; 6] = match *self {
            Self::Radboud => [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5)],
            Self::Karolinska { cancer_class } => [Some(0), Some(1), cancer_class, None, None, None],
        };
        for p in mask.pixels_mut() {
            let v = p.0[0];
            p.0[0] = match table.get(v as usize).copied().flatten() {
                Some(c) => c,
                None if v == 2 && matches!(self, Self::Karolinska { .. }) => {
                    return Err("cancer pixels (2) in a Karolinska mask whose slide has no gleason_score".into())
                }
                None => return Err(format!("value {v} is outside the {} label scheme", self.name())),
            };
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Radboud => "radboud (0–5)",
            Self::Karolinska { .. } => "karolinska (0–2)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(values: &[u8]) -> GrayImage {
        GrayImage::from_raw(values.len() as u32, 1, values.to_vec()).unwrap()
    }

    #[test]
    fn radboud_values_are_kept() {
        let mut m = mask(&[0, 1, 2, 3, 4, 5]);
        LabelScheme::parse("radboud", Some("4+5")).unwrap().apply(&mut m).unwrap();
        assert_eq!(m.as_raw(), &[0, 1, 2, 3, 4, 5]);
        let mut bad = mask(&[0, 6]);
        let e = LabelScheme::Radboud.apply(&mut bad).unwrap_err();
        assert!(e.contains("value 6") && e.contains("radboud"), "{e}");
    }

    #[test]
    fn karolinska_cancer_takes_the_primary_gleason_pattern() {
        let scheme = LabelScheme::parse("Karolinska", Some("4+3")).unwrap();
        assert_eq!(scheme, LabelScheme::Karolinska { cancer_class: Some(4) });
        let mut m = mask(&[0, 1, 2, 2]);
        scheme.apply(&mut m).unwrap();
        assert_eq!(m.as_raw(), &[0, 1, 4, 4]);

        let negative = LabelScheme::parse("karolinska", Some("negative")).unwrap();
        let mut benign = mask(&[0, 1, 1]);
        negative.apply(&mut benign).unwrap();
        assert_eq!(benign.as_raw(), &[0, 1, 1]);
        let e = negative.apply(&mut mask(&[2])).unwrap_err();
        assert!(e.contains("no gleason_score"), "{e}");
        assert!(negative.apply(&mut mask(&[3])).unwrap_err().contains("karolinska"));
    }

    #[test]
    fn unknown_providers_and_scores_are_refused() {
        assert!(LabelScheme::parse("utrecht", None).unwrap_err().contains("utrecht"));
        assert!(LabelScheme::parse("karolinska", Some("7+3")).unwrap_err().contains("7+3"));
        assert_eq!(
            LabelScheme::parse("karolinska", Some("0+0")).unwrap(),
            LabelScheme::Karolinska { cancer_class: None }
        );
    }
}
