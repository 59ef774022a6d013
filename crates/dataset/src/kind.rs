//! The release's three dataset layouts by name, and the image extensions its loaders accept.

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
