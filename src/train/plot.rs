//! `RUN/curves.png`, drawn with plotters: the run name as title; left, the training losses
//! per validation round (`epoch` in the records) on a log axis (they span decades), only those the variant uses; right, validation
//! mIoU and mean Dice on [0, 1]; the best checkpoint's epoch marked in both (dashed line, red
//! dot); legends in strips below the panels, never over a curve.
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

/// What the curves are drawn with besides the records.
#[derive(Debug, Clone, Default)]
pub(crate) struct CurveOptions {
    /// Title: `run <name>`; `None` = the name of the folder holding the PNG (the run dir).
    pub run_name: Option<String>,
    /// The variant: only the losses it uses are drawn. `None` = the losses that are not zero
    /// in every record.
    pub variant: Option<crate::model::Variant>,
    /// Epoch of the best checkpoint; `None` = the first epoch with the highest val mIoU
    /// (the rule training keeps `best` by).
    pub best_epoch: Option<usize>,
}

fn plot_err(e: &dyn std::fmt::Display) -> Error {
    Error::Torch(format!("plotting: {e}"))
}

/// The loss curves to draw: L_dice always; L_semi, L_adv (labeled and unlabeled batches) and
/// L_dis when the variant uses them; the total L_seg when it is more than L_dice.
fn loss_series(
    records: &[EpochRecord],
    variant: Option<crate::model::Variant>,
) -> Vec<Series<'static>> {
    let ep = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        records.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let used = |f: fn(&EpochRecord) -> f64, by_variant: Option<bool>| {
        by_variant.unwrap_or_else(|| records.iter().any(|r| f(r) != 0.0))
    };
    let semi = used(|r| r.loss_semi, variant.map(|v| v.uses_unlabeled()));
    let adv = used(|r| r.loss_adv, variant.map(|v| v.uses_adversarial()));
    let mut out = Vec::new();
    if semi || adv {
        out.push(("L_seg (total)", BLUE, ep(|r| r.loss_seg)));
    }
    out.push(("L_dice", GREEN, ep(|r| r.loss_dice)));
    if semi {
        out.push(("L_semi", MAGENTA, ep(|r| r.loss_semi)));
    }
    if adv {
        out.push(("L_adv", RED, ep(|r| r.loss_adv)));
        let both = variant.map(|v| v.uses_adversarial() && v.uses_unlabeled());
        if used(|r| r.loss_adv_unlabeled, both) {
            let orange = RGBColor(230, 140, 0);
            out.push(("L_adv (unlabeled)", orange, ep(|r| r.loss_adv_unlabeled)));
        }
        out.push(("L_dis", BLACK, ep(|r| r.loss_dis)));
    }
    out
}

/// The first epoch with the highest validation mIoU.
fn best_epoch(records: &[EpochRecord]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for r in records {
        if let Some(m) = r.val.as_ref().map(|v| v.miou).filter(|m| m.is_finite()) {
            if best.is_none_or(|(_, b)| m > b) {
                best = Some((r.epoch, m));
            }
        }
    }
    best.map(|(e, _)| e)
}

/// A legend strip below a panel: a coloured dash and the name of each series.
fn legend(area: &Area<'_>, series: &[(String, RGBColor)], text: bool) -> Result<()> {
    if !text {
        return Ok(());
    }
    let mut x = 60;
    for (name, color) in series {
        area.draw(&PathElement::new(
            vec![(x, 12), (x + 24, 12)],
            color.stroke_width(3),
        ))
        .map_err(|e| plot_err(&e))?;
        area.draw(&Text::new(name.clone(), (x + 30, 4), ("sans-serif", 15)))
            .map_err(|e| plot_err(&e))?;
        x += 40 + 9 * name.len() as i32;
    }
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Whole epochs only on the x axis.
fn epoch_tick(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

/// Loss ticks with two significant digits (0.15, 0.2, 1, 7).
fn loss_tick(v: &f64) -> String {
    let digits = (1 - v.abs().max(1e-12).log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The loss panel: log y axis (losses span decades: L_adv ~7 next to L_dice ~0.1).
fn loss_panel(
    area: &Area<'_>,
    series: &[Series],
    x1: f64,
    best: Option<usize>,
    text: bool,
) -> Result<()> {
    let pos = |(_, y): &&(f64, f64)| y.is_finite() && *y > 0.0;
    let ys = || {
        series
            .iter()
            .flat_map(|s| s.2.iter().filter(pos).map(|p| p.1))
    };
    let (mut y0, mut y1) = (ys().fold(f64::INFINITY, f64::min), ys().fold(0.0, f64::max));
    if !y0.is_finite() {
        (y0, y1) = (0.1, 1.0);
    }
    // Plotted as log10(loss) on a linear axis, labelled with the loss itself.
    let (y0, y1) = ((y0 / 1.5).log10(), (y1 * 1.5).max(y0 * 2.0).log10());
    let (chart_area, legend_area) = area.split_vertically(area.dim_in_pixel().1 as i32 - 30);
    let mut b = ChartBuilder::on(&chart_area);
    b.margin(10);
    if text {
        b.caption("training losses (log scale)", ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(60);
    }
    let mut chart = b
        .build_cartesian_2d(1.0..x1, y0..y1)
        .map_err(|e| plot_err(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("validation round")
            .x_labels(x1.min(10.0) as usize + 1)
            .x_label_formatter(&epoch_tick)
            .y_labels(10)
            .y_label_formatter(&|v| loss_tick(&10f64.powf(*v)));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| plot_err(&e))?;
    for (_, color, data) in series {
        let pts: Vec<(f64, f64)> = data
            .iter()
            .filter(pos)
            .map(|&(x, y)| (x, y.log10()))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| plot_err(&e))?;
    }
    if let Some(e) = best {
        let style = ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(e as f64, y0), (e as f64, y1)],
                6,
                4,
                style,
            ))
            .map_err(|e| plot_err(&e))?;
    }
    let names: Vec<(String, RGBColor)> = series.iter().map(|s| (s.0.to_string(), s.1)).collect();
    legend(&legend_area, &names, text)
}

/// The validation panel: mIoU (all classes) and mean foreground Dice on [0, 1], the best
/// checkpoint's epoch marked.
fn val_panel(
    area: &Area<'_>,
    records: &[EpochRecord],
    x1: f64,
    best: Option<usize>,
    text: bool,
) -> Result<()> {
    let ep = |f: fn(&crate::metrics::SegMetrics) -> f64| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| r.val.as_ref().map(|m| (r.epoch as f64, f(m))))
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let series = [
        ("val mIoU", BLUE, ep(|m| m.miou)),
        ("val mean Dice", GREEN, ep(|m| m.mean_dice)),
    ];
    let (chart_area, legend_area) = area.split_vertically(area.dim_in_pixel().1 as i32 - 30);
    let mut b = ChartBuilder::on(&chart_area);
    b.margin(10);
    if text {
        b.caption("validation", ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(50);
    }
    let mut chart = b
        .build_cartesian_2d(1.0..x1, 0.0..1.0)
        .map_err(|e| plot_err(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("validation round")
            .x_labels(x1.min(10.0) as usize + 1)
            .x_label_formatter(&epoch_tick);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| plot_err(&e))?;
    for (_, color, data) in &series {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .map_err(|e| plot_err(&e))?;
    }
    let mut names: Vec<(String, RGBColor)> =
        series.iter().map(|s| (s.0.to_string(), s.1)).collect();
    if let Some(e) = best {
        let style = ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(e as f64, 0.0), (e as f64, 1.0)],
                6,
                4,
                style,
            ))
            .map_err(|e| plot_err(&e))?;
        let at = series[0].2.iter().find(|p| p.0 == e as f64).copied();
        chart
            .draw_series(at.map(|p| Circle::new(p, 6, RED.filled())))
            .map_err(|e| plot_err(&e))?;
        names.push((format!("best checkpoint (round {e})"), RED));
    }
    legend(&legend_area, &names, text)
}

/// Draws the curves of `records` into `path` (PNG, 1200×520): the run name is the folder
/// holding `path`, the losses drawn are those not zero throughout, the best epoch is the first
/// with the highest val mIoU. See [`draw_curves_with`].
pub(crate) fn draw_curves(records: &[EpochRecord], path: &Path) -> Result<()> {
    draw_curves_with(records, path, &CurveOptions::default())
}

/// Draws the curves: a log-scale loss panel (only the losses the variant uses) and a
/// validation panel (mIoU, mean Dice), the best checkpoint's epoch marked in both, the run
/// name in the title, legends below the panels (never over a curve).
pub(crate) fn draw_curves_with(
    records: &[EpochRecord],
    path: &Path,
    opts: &CurveOptions,
) -> Result<()> {
    draw(records, path, opts, font_available())
}

fn draw(records: &[EpochRecord], path: &Path, opts: &CurveOptions, text: bool) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let name = opts.run_name.clone().unwrap_or_else(|| {
        path.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let body = if text {
        root.titled(&format!("run {name}"), ("sans-serif", 22))
            .map_err(|e| plot_err(&e))?
    } else {
        root.clone()
    };
    let (left, right) = body.split_horizontally(600);
    let x1 = records.iter().map(|r| r.epoch as f64).fold(2.0, f64::max);
    let best = opts.best_epoch.or_else(|| best_epoch(records));
    loss_panel(&left, &loss_series(records, opts.variant), x1, best, text)?;
    val_panel(&right, records, x1, best, text)?;
    root.present()
        .map_err(|e| Error::Torch(format!("plotting {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Variant;

    fn record(epoch: usize, val: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: 1e-4,
            lr_discriminator: 1e-5,
            loss_seg: 1.0 / epoch as f64,
            loss_dice: 0.9 / epoch as f64,
            loss_semi: 0.3,
            loss_adv: 7.0,
            loss_adv_unlabeled: 6.0,
            ramp: 1.0,
            loss_dis: 1.2,
            val: val.map(|m| crate::metrics::SegMetrics {
                iou: vec![m, m],
                miou: m,
                dice: vec![m, m],
                mean_dice: m,
                slices: 1,
            }),
            val_diagnostics: None,
            val_case_dice: None,
            step: 3 * epoch,
            steps: 3,
            slices_per_s: 10.0,
            train_seconds: 1.0,
            seconds: 1.5,
        }
    }

    fn names(s: &[Series<'static>]) -> Vec<&'static str> {
        s.iter().map(|x| x.0).collect()
    }

    #[test]
    fn only_the_losses_a_variant_uses_are_drawn() {
        let recs: Vec<EpochRecord> = (1..=3).map(|e| record(e, None)).collect();
        assert_eq!(
            names(&loss_series(&recs, Some(Variant::Dmnet))),
            [
                "L_seg (total)",
                "L_dice",
                "L_semi",
                "L_adv",
                "L_adv (unlabeled)",
                "L_dis"
            ]
        );
        assert_eq!(
            names(&loss_series(&recs, Some(Variant::Supervised))),
            ["L_dice"]
        );
        assert_eq!(
            names(&loss_series(&recs, Some(Variant::NoAdvNoSharpen))),
            ["L_seg (total)", "L_dice", "L_semi"]
        );
        // Without the variant: the losses that are zero in every record are left out.
        let mut sup = recs.clone();
        for r in &mut sup {
            (r.loss_semi, r.loss_adv, r.loss_dis) = (0.0, 0.0, 0.0);
            r.loss_adv_unlabeled = 0.0;
        }
        assert_eq!(names(&loss_series(&sup, None)), ["L_dice"]);
    }

    #[test]
    fn the_best_epoch_is_the_first_with_the_highest_val_miou() {
        let recs = [
            record(1, Some(0.5)),
            record(2, Some(0.7)),
            record(3, None),
            record(4, Some(0.7)),
            record(5, Some(f64::NAN)),
        ];
        assert_eq!(best_epoch(&recs), Some(2));
        assert_eq!(best_epoch(&recs[2..3]), None);
    }

    #[test]
    fn curves_are_drawn_with_and_without_a_font() {
        let dir = std::env::temp_dir().join(format!("dmnet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recs: Vec<EpochRecord> = (1..=4).map(|e| record(e, Some(0.1 * e as f64))).collect();
        let opts = CurveOptions {
            run_name: Some("la-dmnet".into()),
            variant: Some(Variant::Dmnet),
            best_epoch: None,
        };
        for (text, name) in [(false, "plain.png"), (font_available(), "text.png")] {
            let p = dir.join(name);
            draw(&recs, &p, &opts, text).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        }
        // A single epoch (flat ranges), no validation and zero losses must not fail either.
        let mut one = record(1, None);
        one.loss_adv = 0.0;
        draw(
            &[one],
            &dir.join("one.png"),
            &CurveOptions::default(),
            false,
        )
        .unwrap();
        draw_curves(&[], &dir.join("none.png")).unwrap();
        assert_eq!(
            [0.15, 0.2, 1.0, 7.0, 12.6].map(|v| loss_tick(&v)),
            ["0.15", "0.2", "1", "7", "13"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
