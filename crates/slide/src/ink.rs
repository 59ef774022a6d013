//! Pen ink on the glass (blue, green, red and black marker) found by colour on a slide's overview.
//!
//! H&E and IHC stains sit in a narrow band of hues: hematoxylin transmits red a little more than
//! green (purple, hue above 240°), eosin is pink to magenta (hue 290–360°), DAB is brown (hue
//! 15–45°). Markers lie outside that band: blue and cyan-blue ink transmits more green than red
//! (hue below 240°), green ink is the only green on a slide, red marker is far more saturated than
//! eosin or blood at overview scale, and black marker leaves almost no light at all.

use image::{GrayImage, Luma, RgbImage};
use imageproc::{distance_transform::Norm, morphology::dilate};

/// A marker colour found on a slide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ink {
    /// Blue or cyan-blue marker.
    Blue,
    /// Green marker.
    Green,
    /// Red marker.
    Red,
    /// Black marker (or any ink dark enough to block the light).
    Black,
}

impl Ink {
    /// Every marker colour, in the order the masks label them (1, 2, 3, 4).
    pub const ALL: [Ink; 4] = [Ink::Blue, Ink::Green, Ink::Red, Ink::Black];

    /// The class name written to GeoJSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Ink::Blue => "Blue ink",
            Ink::Green => "Green ink",
            Ink::Red => "Red ink",
            Ink::Black => "Black ink",
        }
    }

    /// The colour the class is drawn in (QuPath's `color`, the QC picture).
    pub fn colour(self) -> [u8; 3] {
        match self {
            Ink::Blue => [30, 90, 255],
            Ink::Green => [20, 200, 60],
            Ink::Red => [255, 40, 40],
            Ink::Black => [0, 0, 0],
        }
    }

    fn label(self) -> u8 {
        self as u8 + 1
    }

    /// The marker colour of one overview pixel, if it is ink.
    pub fn of_pixel([r, g, b]: [u8; 3]) -> Option<Ink> {
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        let chroma = (max - min) as f64;
        let saturation = chroma / max.max(1) as f64;
        if max < BLACK_MAX_VALUE && saturation <= BLACK_MAX_SATURATION {
            return Some(Ink::Black);
        }
        if saturation < MIN_SATURATION {
            return None;
        }
        let (r, g, b) = (r as f64, g as f64, b as f64);
        let hue = if max as f64 == r {
            (60.0 * (g - b) / chroma).rem_euclid(360.0)
        } else if max as f64 == g {
            120.0 + 60.0 * (b - r) / chroma
        } else {
            240.0 + 60.0 * (r - g) / chroma
        };
        if GREEN_HUES.contains(&hue) {
            Some(Ink::Green)
        } else if BLUE_HUES.contains(&hue) && saturation >= BLUE_MIN_SATURATION && max >= BLUE_MIN_VALUE {
            Some(Ink::Blue)
        } else if (hue >= RED_HUES.0 || hue < RED_HUES.1) && saturation >= RED_MIN_SATURATION {
            Some(Ink::Red)
        } else {
            None
        }
    }
}

/// Below this brightest channel (0–255), and no more saturated than [`BLACK_MAX_SATURATION`], a
/// pixel is black ink: stained tissue averaged over several µm gets that dark only in dense
/// hematoxylin, which stays a saturated purple (24, 4, 40).
const BLACK_MAX_VALUE: u8 = 45;
const BLACK_MAX_SATURATION: f64 = 0.65;
/// Greys and white glass are never ink.
const MIN_SATURATION: f64 = 0.25;
/// Green marker: hues no stain takes.
const GREEN_HUES: std::ops::Range<f64> = 70.0..175.0;
/// Blue marker: blue with more green than red (hematoxylin has more red than green, > 240°).
const BLUE_HUES: std::ops::Range<f64> = 175.0..236.0;
const BLUE_MIN_SATURATION: f64 = 0.35;
/// Blue marker passes its blue; dense hematoxylin that leans blue (56, 68, 103) is darker.
const BLUE_MIN_VALUE: u8 = 120;
/// Red marker: red hues (from 345° through 0° to 12°) at saturations eosin and blood do not reach at
/// overview scale.
const RED_HUES: (f64, f64) = (345.0, 12.0);
const RED_MIN_SATURATION: f64 = 0.72;

/// Where a slide's overview holds ink, by colour, widened by a pixel to take the blended rim.
#[derive(Debug, Clone)]
pub struct InkMask {
    /// 0 where there is no ink, else the [`Ink`]'s label (1–4).
    classes: GrayImage,
    /// 255 where there is ink or its rim.
    any: GrayImage,
}

impl InkMask {
    /// Finds ink on `overview`; `dilation` widens every ink region by that many pixels.
    pub fn detect(overview: &RgbImage, dilation: u8) -> Self {
        let classes = GrayImage::from_fn(overview.width(), overview.height(), |x, y| {
            Luma([Ink::of_pixel(overview.get_pixel(x, y).0).map_or(0, Ink::label)])
        });
        // A pixel with fewer than two ink neighbours is noise (a dark speck, a nucleus cluster),
        // not a pen stroke.
        let classes = drop_isolated(&classes);
        let binary = GrayImage::from_fn(classes.width(), classes.height(), |x, y| {
            Luma([if classes.get_pixel(x, y).0[0] != 0 { 255 } else { 0 }])
        });
        let any = if dilation > 0 { dilate(&binary, Norm::LInf, dilation) } else { binary };
        Self { classes, any }
    }

    /// No ink anywhere, for an overview of `width` × `height`.
    pub fn empty(width: u32, height: u32) -> Self {
        Self { classes: GrayImage::new(width, height), any: GrayImage::new(width, height) }
    }

    /// 255 where there is ink (with its rim), 0 elsewhere.
    pub fn any(&self) -> &GrayImage {
        &self.any
    }

    /// Whether pixel (`x`, `y`) is ink or its rim.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        self.any.get_pixel(x, y).0[0] != 0
    }

    /// A 0/255 mask of the pixels of one colour (without the rim).
    pub fn of(&self, ink: Ink) -> GrayImage {
        let l = ink.label();
        GrayImage::from_fn(self.classes.width(), self.classes.height(), |x, y| {
            Luma([if self.classes.get_pixel(x, y).0[0] == l { 255 } else { 0 }])
        })
    }

    /// Pixels of each colour (without the rim), in [`Ink::ALL`]'s order.
    pub fn pixels_by_colour(&self) -> [u64; 4] {
        let mut n = [0u64; 4];
        for p in self.classes.pixels() {
            if p.0[0] != 0 {
                n[p.0[0] as usize - 1] += 1;
            }
        }
        n
    }
}

/// Clears ink pixels with fewer than two ink pixels among their eight neighbours.
fn drop_isolated(classes: &GrayImage) -> GrayImage {
    let (w, h) = classes.dimensions();
    let ink = |x: i64, y: i64| {
        x >= 0 && y >= 0 && x < w as i64 && y < h as i64 && classes.get_pixel(x as u32, y as u32).0[0] != 0
    };
    GrayImage::from_fn(w, h, |x, y| {
        let v = classes.get_pixel(x, y).0[0];
        let (x, y) = (x as i64, y as i64);
        let neighbours = (-1..=1)
            .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
            .filter(|&(dx, dy)| (dx, dy) != (0, 0) && ink(x + dx, y + dy))
            .count();
        Luma([if neighbours >= 2 { v } else { 0 }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ink colours as markers leave them over glass, eosin and hematoxylin (the transmittances the
    /// drawn fixtures use), and the stains themselves at overview scale.
    #[test]
    fn markers_are_told_from_stains() {
        let over = |base: [u8; 3], t: [f64; 3]| -> [u8; 3] { std::array::from_fn(|i| (base[i] as f64 * t[i]) as u8) };
        let (glass, eosin, hematoxylin) = ([242, 240, 244], [228, 150, 190], [120, 82, 168]);
        let blue = [0.10, 0.35, 0.85];
        let green = [0.20, 0.70, 0.30];
        let red = [0.90, 0.12, 0.18];
        for base in [glass, eosin, hematoxylin] {
            assert_eq!(Ink::of_pixel(over(base, blue)), Some(Ink::Blue), "blue over {base:?}");
            assert_eq!(Ink::of_pixel(over(base, green)), Some(Ink::Green), "green over {base:?}");
            assert_eq!(Ink::of_pixel(over(base, [0.12; 3])), Some(Ink::Black), "black over {base:?}");
        }
        assert_eq!(Ink::of_pixel(over(glass, red)), Some(Ink::Red));
        assert_eq!(Ink::of_pixel(over(eosin, red)), Some(Ink::Red));
        // Stains, blood, DAB, glass and dust are not ink.
        for stain in
            [glass, eosin, hematoxylin, [200, 120, 170], [90, 60, 140], [190, 70, 80], [150, 100, 60], [128; 3]]
        {
            assert_eq!(Ink::of_pixel(stain), None, "{stain:?}");
        }
    }

    #[test]
    fn specks_are_not_strokes_and_strokes_are_widened() {
        let mut img = RgbImage::from_pixel(20, 20, image::Rgb([240, 240, 240]));
        img.put_pixel(3, 3, image::Rgb([0, 0, 0]));
        img.put_pixel(16, 3, image::Rgb([0, 0, 0]));
        img.put_pixel(17, 3, image::Rgb([0, 0, 0]));
        for x in 8..14 {
            for y in 10..12 {
                img.put_pixel(x, y, image::Rgb([20, 160, 60]));
            }
        }
        let m = InkMask::detect(&img, 1);
        assert!(!m.contains(3, 3) && !m.contains(16, 3), "specks of one and two pixels");
        assert!(m.contains(10, 10) && m.contains(10, 12) && m.contains(7, 9));
        assert_eq!(m.pixels_by_colour(), [0, 12, 0, 0]);
        assert_eq!(m.of(Ink::Green).pixels().filter(|p| p.0[0] != 0).count(), 12);
    }
}
