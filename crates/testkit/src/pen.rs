//! Pen marks drawn on a slide image as pathologists draw them on glass (a blue ring, a green line,
//! black dots, a red tick), as light through ink: each channel multiplied by the ink's transmittance.

use image::RgbImage;

/// Marker transmittances (R, G, B): the light each ink lets through.
pub const BLUE: [f64; 3] = [0.10, 0.35, 0.85];
/// Green marker.
pub const GREEN: [f64; 3] = [0.20, 0.70, 0.30];
/// Black marker.
pub const BLACK: [f64; 3] = [0.12, 0.12, 0.14];
/// Red marker.
pub const RED: [f64; 3] = [0.90, 0.12, 0.18];

/// `image` (the sample slide at level 0, or any image of that size) with pen marks drawn on it,
/// and where the ink is (row-major, true where there is ink). Strokes are 60–80 px wide.
pub fn mark_with_pen(image: &RgbImage) -> (RgbImage, Vec<bool>) {
    let w = image.width();
    let mut marked = image.clone();
    let mut ink = vec![false; (w * image.height()) as usize];
    let mut stroke = |inside: &dyn Fn(f64, f64) -> bool, t: [f64; 3]| {
        for (x, y, p) in marked.enumerate_pixels_mut() {
            if inside(x as f64, y as f64) {
                p.0 = std::array::from_fn(|i| (p.0[i] as f64 * t[i]) as u8);
                ink[(y * w + x) as usize] = true;
            }
        }
    };
    // A blue ring around a region.
    stroke(&|x, y| ((x - 1100.0).hypot(y - 1500.0) - 650.0).abs() < 35.0, BLUE);
    // A green line across the tissue.
    stroke(&|x, y| ((y - 0.6 * x - 300.0) / 1.166).abs() < 40.0, GREEN);
    // Black dots.
    for (cx, cy) in [(700.0, 900.0), (1500.0, 2300.0), (1800.0, 1200.0)] {
        stroke(&move |x, y| (x - cx).hypot(y - cy) < 70.0, BLACK);
    }
    // A red tick.
    stroke(&|x, y| (400.0..1000.0).contains(&x) && (y - 2500.0 - 0.3 * (x - 400.0)).abs() < 30.0, RED);
    (marked, ink)
}
