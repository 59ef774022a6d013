//! Dataset layouts (PTCGA200, PCam200, segPANDA200) of crops of a real H&E patch, for the
//! training tests.

use std::path::Path;

/// LibTorch's random generator is process-wide: runs in one test process take turns.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A real 512 px H&E patch (the bundled slide's golden patch), the source of every fixture.
fn he_patch() -> image::RgbImage {
    image::open(crate::repo_root().join("crates/slide/tests/golden/cmu1_0.39_512_800_800.png")).unwrap().to_rgb8()
}

/// A PTCGA200 layout of 16 crops of a real H&E patch: `lung` holds them as they are, `skin`
/// colour-inverted, 4 "slides" of 4.
pub fn dataset(root: &Path) {
    let src = he_patch();
    for i in 0..16u32 {
        let organ = if i % 2 == 0 { "lung" } else { "skin" };
        let mut crop = image::imageops::crop_imm(&src, (i * 29) % 380, (i * 53) % 380, 128, 128).to_image();
        if organ == "skin" {
            image::imageops::invert(&mut crop);
        }
        let p = root.join(organ).join(format!("s{}_{}_0.jpg", i / 4, i));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        crop.save(&p).unwrap();
    }
}

/// A PCam200 layout of crops of the same patch: `normal` as they are, `tumor` colour-inverted;
/// 8 images per class in train, 4 in val and test, two cases each.
pub fn pcam200(root: &Path) {
    let src = he_patch();
    let mut i = 0u32;
    for (split, n) in [("train", 8), ("val", 4), ("test", 4)] {
        for class in ["normal", "tumor"] {
            for j in 0..n {
                let mut crop = image::imageops::crop_imm(&src, (i * 29) % 380, (i * 53) % 380, 128, 128).to_image();
                if class == "tumor" {
                    image::imageops::invert(&mut crop);
                }
                let p = root.join(split).join(class).join(format!("case{}", j % 2)).join(format!("p{i}.jpg"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                crop.save(&p).unwrap();
                i += 1;
            }
        }
    }
}

/// A segPANDA200 layout of 64 px crops with masks a network can learn: the left half as it is
/// (class 1), the right half colour-inverted (class 2), a one-pixel frame the loss ignores
/// (255); 8 train, 4 val, 4 test patches.
pub fn segpanda200(root: &Path) {
    let src = he_patch();
    let mut i = 0u32;
    for (split, n) in [("train", 8), ("val", 4), ("test", 4)] {
        for j in 0..n {
            let mut crop = image::imageops::crop_imm(&src, (i * 37) % 440, (i * 61) % 440, 64, 64).to_image();
            let mut mask = image::GrayImage::new(64, 64);
            for (x, y, m) in mask.enumerate_pixels_mut() {
                m.0[0] = if x == 0 || y == 0 || x == 63 || y == 63 {
                    255
                } else if x < 32 {
                    1
                } else {
                    2
                };
                if x >= 32 {
                    let p = crop.get_pixel_mut(x, y);
                    p.0 = p.0.map(|v| 255 - v);
                }
            }
            let dir = root.join(split).join("3").join(format!("case{}", j % 2));
            std::fs::create_dir_all(&dir).unwrap();
            crop.save(dir.join(format!("p{i}.png"))).unwrap();
            mask.save(dir.join(format!("p{i}_mask.png"))).unwrap();
            i += 1;
        }
    }
}
