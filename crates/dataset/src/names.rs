//! Patch file names as the release's loaders read them: the extension taken from the first `.`,
//! segPANDA200's `mask` rule and mask path, and the slide ids patchtcga puts into names so that
//! every patch it writes is listed.

use std::path::Path;

use crate::kind::{DatasetKind, IMAGE_EXTENSIONS};

/// The extension as the release's loaders read it: the text from the first `.` to the end
/// (`a.b_1_2.jpg` → `.b_1_2.jpg`), or `None` for a name without a dot.
pub fn release_extension(name: &str) -> Option<&str> {
    name.find('.').map(|i| &name[i..])
}

/// Whether the release's loader for `kind` lists a file of this name: its extension (from the
/// first `.`) is one of `.jpg .JPG .JPEG .png`, and for segPANDA200 the name holds no `mask`.
pub fn release_lists(name: &str, kind: DatasetKind) -> bool {
    let ext_ok =
        release_extension(name).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.strip_prefix('.') == Some(x)));
    ext_ok && !(kind == DatasetKind::SegPanda200 && name.contains(MASK))
}

/// The name of the mask the release's segPANDA200 loader opens for an image: the text before the
/// first `.`, then `_mask.png`.
pub fn release_mask_name(image: &str) -> String {
    let stem = image.find('.').map_or(image, |i| &image[..i]);
    format!("{stem}_mask.png")
}

/// Whether a file name looks like an image by its last extension (what a user means to be one,
/// whatever the release's rule makes of it); hidden files (a write in progress) do not.
pub fn looks_like_image(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["jpg", "jpeg", "png", "tif", "tiff"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Why the release's loader for `kind` leaves out an image-like file, for messages.
pub fn why_unlisted(name: &str, kind: DatasetKind) -> String {
    if kind == DatasetKind::SegPanda200 && name.contains(MASK) {
        return format!("the release's segPANDA200 loader skips every name containing `{MASK}`");
    }
    match release_extension(name) {
        Some(ext) => format!(
            "the release's loaders read its extension from the first '.' as `{ext}`, not one of .jpg .JPG .JPEG .png, \
             and skip it"
        ),
        None => "no extension: the release's loaders skip it".into(),
    }
}

const MASK: &str = "mask";

/// The slide id written into patch names (`<id>_<x>_<y>.<ext>`) for a slide id: every `.` becomes
/// `_` (TCGA's `<barcode>.<uuid>` stems), and for segPANDA200 every `mask` becomes `msk`, so the
/// release's loaders list every patch and find every mask. Ids without either are unchanged.
pub fn name_id(id: &str, kind: DatasetKind) -> String {
    let mut out = id.replace('.', "_");
    if kind == DatasetKind::SegPanda200 {
        while out.contains(MASK) {
            out = out.replace(MASK, "msk");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_rule_reads_the_extension_from_the_first_dot() {
        let k = DatasetKind::Ptcga200;
        assert!(release_lists("TCGA-AA-3861-01Z-00-DX1_0_0.jpg", k));
        assert!(!release_lists("TCGA-AA-3861-01Z-00-DX1.9cc9a5a0_0_0.jpg", k));
        assert!(release_lists("a.JPEG", k) && release_lists("a.png", k) && release_lists(".jpg", k));
        assert!(!release_lists("a.jpeg", k) && !release_lists("a.PNG", k) && !release_lists("jpg", k));
        assert!(release_lists("a_mask.png", DatasetKind::Pcam200));
        assert!(!release_lists("a_mask.png", DatasetKind::SegPanda200));
        assert_eq!(release_mask_name("x_1_2.jpg"), "x_1_2_mask.png");
        assert_eq!(release_mask_name("x.y_1_2.jpg"), "x_mask.png");
    }

    #[test]
    fn name_ids_keep_every_patch_listed() {
        let gdc = "TCGA-AA-3861-01Z-00-DX1.9cc9a5a0-7d7a-4c1a-b3d5-0a8a3f8b1c2e";
        assert_eq!(name_id(gdc, DatasetKind::Ptcga200), "TCGA-AA-3861-01Z-00-DX1_9cc9a5a0-7d7a-4c1a-b3d5-0a8a3f8b1c2e");
        assert_eq!(name_id("tumor_001", DatasetKind::Pcam200), "tumor_001");
        assert_eq!(name_id("mask_01", DatasetKind::Pcam200), "mask_01");
        assert_eq!(name_id("mamaskask.x", DatasetKind::SegPanda200), "mamskask_x");
        for id in [gdc, "masked", "a.mask.b", "mmaskask"] {
            for kind in [DatasetKind::Ptcga200, DatasetKind::Pcam200, DatasetKind::SegPanda200] {
                let name = format!("{}_512_1024.jpg", name_id(id, kind));
                assert!(release_lists(&name, kind), "{name}");
            }
        }
    }
}
