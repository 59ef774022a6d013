//! The release's three dataset layouts and the three sets of a split by name, and the image
//! extensions its loaders accept.

use std::fmt;
use std::str::FromStr;

/// The three dataset layouts of the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum DatasetKind {
    /// `<root>/<organ>/<img>`.
    Ptcga200,
    /// `<root>/{train,val,test}/{normal,tumor}/<case>/<img>`.
    Pcam200,
    /// `<root>/{train,val,test}/<grade>/<case>/<img>` with `<stem>_mask.png` beside each image.
    #[value(name = "segpanda200")]
    SegPanda200,
}

impl DatasetKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ptcga200 => "ptcga200",
            Self::Pcam200 => "pcam200",
            Self::SegPanda200 => "segpanda200",
        }
    }
}

/// Image extensions the release's loaders accept.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "JPG", "JPEG", "png"];

/// One of the three sets of a split, named as its folders (PCam200, segPANDA200), split files
/// and slide lists name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    /// The three, in the release's order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// Its name on disk: `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `train`, `val` or `test`; anything else is refused with the three names.
impl FromStr for Split {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| format!("split {name:?} is not train, val or test"))
    }
}
