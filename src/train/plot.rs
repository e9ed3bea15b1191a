//! `RUN/curves.png`: training losses and validation mIoU per epoch, drawn with plotters.
//! Text needs a TrueType font: the first of a few common system fonts is registered; without
//! one the chart is drawn without text (never a panic).
use crate::artifact::EpochRecord;
use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font as "sans-serif" once; false when none could be loaded.
fn font_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        for f in FONTS {
            if let Ok(bytes) = std::fs::read(f) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found; curves.png is drawn without text");
        false
    })
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    text: bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Torch(format!("plotting: {e}"));
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let mut b = ChartBuilder::on(area);
    b.margin(10);
    if text {
        b.caption(title, ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(50);
    }
    let mut chart = b
        .build_cartesian_2d(1.0..x1.max(2.0), y0..y1)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("epoch");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(&e))?;
    for (name, color, data) in series {
        let s = chart
            .draw_series(LineSeries::new(data.iter().copied(), color))
            .map_err(|e| err(&e))?;
        if text {
            let c = *color;
            s.label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Draws the curves of `records` into `path` (PNG, 1000×450).
pub fn draw_curves(records: &[EpochRecord], path: &Path) -> Result<()> {
    draw(records, path, font_available())
}

fn draw(records: &[EpochRecord], path: &Path, text: bool) -> Result<()> {
    let root = BitMapBackend::new(path, (1000, 450)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| Error::Torch(format!("plotting: {e}")))?;
    let (left, right) = root.split_horizontally(500);
    let ep = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    let losses = [
        ("L_seg", BLUE, ep(&|r| Some(r.loss_seg))),
        ("L_dice", GREEN, ep(&|r| Some(r.loss_dice))),
        ("L_semi", MAGENTA, ep(&|r| Some(r.loss_semi))),
        ("L_adv", RED, ep(&|r| Some(r.loss_adv))),
        ("L_dis", BLACK, ep(&|r| Some(r.loss_dis))),
    ];
    panel(&left, "training losses", &losses, text)?;
    let val = [("val mIoU", BLUE, ep(&|r| r.val.as_ref().map(|m| m.miou)))];
    panel(&right, "validation mIoU", &val, text)?;
    root.present()
        .map_err(|e| Error::Torch(format!("plotting {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: 1e-4,
            lr_discriminator: 1e-5,
            loss_seg: 1.0 / epoch as f64,
            loss_dice: 0.9 / epoch as f64,
            loss_semi: 0.3,
            loss_adv: 1.4,
            loss_adv_unlabeled: 1.3,
            ramp: 1.0,
            loss_dis: 1.2,
            val: None,
            val_diagnostics: None,
            step: 3 * epoch,
            steps: 3,
            slices_per_s: 10.0,
            train_seconds: 1.0,
            seconds: 1.5,
        }
    }

    #[test]
    fn curves_are_drawn_with_and_without_a_font() {
        let dir = std::env::temp_dir().join(format!("dmnet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recs: Vec<EpochRecord> = (1..=3).map(record).collect();
        for (text, name) in [(false, "plain.png"), (font_available(), "text.png")] {
            let p = dir.join(name);
            draw(&recs, &p, text).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        }
        // A single epoch (flat ranges) must not fail either.
        draw(&recs[..1], &dir.join("one.png"), false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
