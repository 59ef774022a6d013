//! PNG pictures of a run: curves of its metrics log (loss, learning rate, accuracy against
//! updates) and confusion matrices; the colours of class maps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use patchtcga_metrics::run::read_log;
use plotters::prelude::*;

use crate::LearnError;

static FONT: Once = Once::new();

type Series = (String, Vec<(f64, f64)>);

/// Colours of class ids 0–5 in overlays and class maps (class 0, background, stays clear).
pub const COLOURS: [[u8; 3]; 6] =
    [[0, 0, 0], [64, 160, 255], [40, 200, 80], [255, 220, 0], [255, 120, 0], [220, 0, 40]];

/// Redraws `loss.png`, `lr.png` and (when logged) `accuracy.png` in `out` from the metrics log of
/// the run folder `run`.
pub fn curves(run: &Path, out: &Path) -> Result<(), LearnError> {
    // Each entry's figures, found once.
    let entries: Vec<(f64, BTreeMap<String, f64>)> = read_log(run)
        .map_err(LearnError::Config)?
        .iter()
        .map(|e| (e.update() as f64, e.scalars().into_iter().collect()))
        .collect();
    let series = |key: &str| -> Series {
        let pts = entries.iter().filter_map(|(u, figures)| Some((*u, *figures.get(key)?))).collect();
        (key.to_owned(), pts)
    };
    std::fs::create_dir_all(out).map_err(|e| LearnError::io(out, e))?;
    let groups: [(&str, &str, Vec<&str>); 3] = [
        ("loss.png", "loss", vec!["loss", "val_loss", "test_loss"]),
        ("lr.png", "learning rate", vec!["lr"]),
        ("accuracy.png", "accuracy", vec!["accuracy", "val_accuracy", "test_accuracy"]),
    ];
    for (file, title, keys) in groups {
        let s: Vec<Series> = keys.iter().map(|k| series(k)).filter(|(_, p)| !p.is_empty()).collect();
        if !s.is_empty() {
            chart(&out.join(file), title, &s)?;
        }
    }
    Ok(())
}

fn font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes `texts` (text, top-left corner, pixel size) in black onto an RGB image buffer
/// (`width`×`height`, 3 bytes per pixel).
pub fn label(
    buffer: &mut [u8],
    width: u32,
    height: u32,
    texts: &[(String, (i32, i32), u32)],
) -> Result<(), LearnError> {
    font();
    let err = |e: String| LearnError::Config(format!("cannot draw labels: {e}"));
    let root = BitMapBackend::with_buffer(buffer, (width, height)).into_drawing_area();
    for (t, at, size) in texts {
        root.draw(&Text::new(t.clone(), *at, ("sans-serif", *size as i32).into_font()))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// A confusion matrix as a heat map: rows are true classes, columns predicted ones, each cell
/// shaded by its share of the row and labelled with its count.
pub fn confusion(path: &Path, title: &str, counts: &[Vec<u64>], names: &[String]) -> Result<(), LearnError> {
    font();
    let err = |e: String| LearnError::Config(format!("{}: cannot draw: {e}", path.display()));
    let k = counts.len();
    let cell = (480 / k.max(1)).clamp(24, 120) as i32;
    let side = cell * k as i32;
    let draw = |tmp: &Path| -> Result<(), LearnError> {
        let root = BitMapBackend::new(tmp, ((side + 200) as u32, (side + 160) as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let text = |s: &str, at: (i32, i32), size: i32| -> Result<(), LearnError> {
            root.draw(&Text::new(s.to_owned(), at, ("sans-serif", size).into_font())).map_err(|e| err(e.to_string()))
        };
        text(title, (10, 8), 20)?;
        text("predicted →", (150 + side / 2 - 40, 36), 14)?;
        let (x0, y0) = (150, 60);
        for (t, row) in counts.iter().enumerate() {
            let n: u64 = row.iter().sum::<u64>().max(1);
            let name = names.get(t).map(String::as_str).unwrap_or("?");
            text(name, (8, y0 + t as i32 * cell + cell / 2 - 7), 14)?;
            for (p, &c) in row.iter().enumerate() {
                let share = c as f64 / n as f64;
                let shade = (255.0 * (1.0 - 0.8 * share)) as u8;
                let (x, y) = (x0 + p as i32 * cell, y0 + t as i32 * cell);
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(shade, shade, 255).filled()))
                    .map_err(|e| err(e.to_string()))?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK.stroke_width(1)))
                    .map_err(|e| err(e.to_string()))?;
                text(&c.to_string(), (x + 4, y + cell / 2 - 7), 14)?;
            }
        }
        for (p, name) in names.iter().enumerate().take(k) {
            text(name, (x0 + p as i32 * cell + 2, y0 + side + 6), 12)?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    };
    patchtcga_atomic::write_with(path, draw, |e| LearnError::io(path, e))
}

/// One line chart (points where a series has a single value) with a legend.
pub fn chart(path: &Path, title: &str, series: &[Series]) -> Result<(), LearnError> {
    font();
    let err = |e: String| LearnError::Config(format!("{}: cannot draw: {e}", path.display()));
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (x0, x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let draw = |tmp: &Path| -> Result<(), LearnError> {
        let root = BitMapBackend::new(tmp, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(|e| err(e.to_string()))?;
        c.configure_mesh()
            .x_desc("update")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            if pts.len() > 1 {
                c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(e.to_string()))?;
            }
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    };
    patchtcga_atomic::write_with(path, draw, |e| LearnError::io(path, e))
}
