//! `medley-testnet sweep`: a scenario run over several seeds and a grid of field values,
//! with each figure's mean and 95 % confidence interval per grid point (`sweep.md`), every
//! run's figures (`sweep.csv`), and plots of the main figures against a swept field.
//!
//! A field is named by its path in the scenario file (`workload.arrivals_per_sec`,
//! `network.between.latency_ms`, `regions.0.listeners`); each value is read as TOML (a
//! number, a boolean, a quoted string) or, failing that, taken as a string. Runs go to
//! `runs/<point>-seed<seed>/` of the output folder, each with its own report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::record::{RunError, write_err};
use crate::report::Summary;
use crate::run::{RunOptions, run};
use crate::scenario::Scenario;

/// How to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The scenario file's text.
    pub scenario: String,
    /// Runs per grid point, with seeds `seed`, `seed + 1`, …
    pub seeds: usize,
    /// The first seed [default: the scenario's].
    pub seed: Option<u64>,
    /// Fields and the values each takes (the grid is every combination).
    pub sets: Vec<(String, Vec<String>)>,
    /// The output folder.
    pub out: PathBuf,
    /// Whether to shape the network.
    pub shaping: bool,
    /// Where the binaries are (default: [`crate::bin_dir`]).
    pub bin_dir: Option<PathBuf>,
}

/// Parses `field=v1,v2,…`.
pub fn parse_set(s: &str) -> Result<(String, Vec<String>), RunError> {
    let bad = || RunError::Sweep(format!("--set {s}: expected field=value[,value…]"));
    let (field, values) = s.split_once('=').ok_or_else(bad)?;
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if field.trim().is_empty() || values.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok((field.trim().to_string(), values))
}

/// One run of a sweep: its grid point, seed and figures.
#[derive(Debug, Clone)]
pub struct SweepRun {
    /// The value of each swept field.
    pub point: Vec<String>,
    /// The seed.
    pub seed: u64,
    /// Its figures.
    pub summary: Summary,
}

/// A value read as TOML, or else a string.
fn toml_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `path` (dotted; numbers index arrays) of `doc` to `value`.
fn set_field(doc: &mut toml::Value, path: &str, value: toml::Value) -> Result<(), RunError> {
    let missing = || RunError::Sweep(format!("the scenario has no field {path}"));
    let mut at = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match at {
            toml::Value::Array(a) => {
                let idx: usize = part.parse().map_err(|_| missing())?;
                a.get_mut(idx).ok_or_else(missing)?
            }
            toml::Value::Table(t) => {
                if last {
                    t.insert((*part).to_string(), value);
                    return Ok(());
                }
                t.entry((*part).to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            _ => return Err(missing()),
        };
        if last {
            *at = value;
            return Ok(());
        }
    }
    Err(missing())
}

/// Every combination of the fields' values, in order.
fn grid(sets: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let mut points = vec![Vec::new()];
    for (_, values) in sets {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(v.clone());
                    q
                })
            })
            .collect();
    }
    points
}

/// The scenario with a grid point's values set.
fn scenario_at(
    base: &toml::Value,
    sets: &[(String, Vec<String>)],
    point: &[String],
) -> Result<Scenario, RunError> {
    let mut doc = base.clone();
    for ((field, _), v) in sets.iter().zip(point) {
        set_field(&mut doc, field, toml_value(v))?;
    }
    let text = toml::to_string(&doc).map_err(|e| RunError::Sweep(e.to_string()))?;
    Ok(Scenario::parse(&text)?)
}

/// Runs the sweep; writes `sweep.csv`, `sweep.md` and the plots into `opts.out`.
pub async fn sweep(opts: SweepOptions) -> Result<Vec<SweepRun>, RunError> {
    if opts.seeds == 0 {
        return Err(RunError::Sweep("--seeds must be at least 1".into()));
    }
    let base: toml::Value = toml::from_str(&opts.scenario)
        .map_err(|e| RunError::Sweep(format!("the scenario is not TOML: {e}")))?;
    let points = grid(&opts.sets);
    // Every grid point is checked before anything runs.
    let scenarios: Vec<Scenario> = points
        .iter()
        .map(|p| scenario_at(&base, &opts.sets, p))
        .collect::<Result<_, _>>()?;
    let first_seed = opts.seed.unwrap_or(scenarios[0].seed);
    std::fs::create_dir_all(&opts.out).map_err(write_err(&opts.out))?;
    let mut runs = Vec::new();
    for (point, sc) in points.iter().zip(scenarios) {
        for i in 0..opts.seeds {
            let seed = first_seed + i as u64;
            let label = run_label(&opts.sets, point, seed);
            let out = opts.out.join("runs").join(&label);
            tracing::info!(run = %label, "sweep: running");
            eprintln!("sweep: {label}");
            let data = run(RunOptions {
                scenario: sc.clone(),
                seed,
                out,
                bin_dir: opts.bin_dir.clone(),
                shaping: opts.shaping,
            })
            .await?;
            runs.push(SweepRun {
                point: point.clone(),
                seed,
                summary: crate::report::summary(&data, seed),
            });
        }
    }
    write(&opts.out, &opts.sets, &runs)?;
    Ok(runs)
}

/// A run's folder name: its grid point and seed.
fn run_label(sets: &[(String, Vec<String>)], point: &[String], seed: u64) -> String {
    let mut label: String = sets
        .iter()
        .zip(point)
        .map(|((f, _), v)| format!("{f}={v}_"))
        .collect();
    label.push_str(&format!("seed{seed}"));
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A figure of a run.
type Figure = (&'static str, fn(&Summary) -> Option<f64>);

/// The figures `sweep.csv` and `sweep.md` carry.
const FIGURES: [Figure; 11] = [
    ("plays", |s| Some(s.all.plays as f64)),
    ("failed", |s| Some(s.all.failed as f64)),
    ("stalled_share", |s| Some(s.all.stalled.share)),
    ("ttfa_p50_ms", |s| s.all.ttfa_ms.p50),
    ("ttfa_p90_ms", |s| s.all.ttfa_ms.p90),
    ("ttfa_p99_ms", |s| s.all.ttfa_ms.p99),
    ("cache_share", |s| Some(s.all.bytes_share.cache)),
    ("peers_share", |s| Some(s.all.bytes_share.peers)),
    ("hot_share", |s| Some(s.all.bytes_share.hot)),
    ("rebuilt_share", |s| Some(s.all.bytes_share.rebuilt)),
    ("crowd_rebuilt_share", |s| {
        s.crowd.as_ref().map(|c| c.bytes_share.rebuilt)
    }),
];

/// Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// A mean and the half-width of its 95 % confidence interval (none from one value).
pub type MeanCi = (f64, Option<f64>);

/// The mean of `v` and the half-width of its 95 % confidence interval (Student's t; `None`
/// with fewer than two values).
pub fn mean_ci(v: &[f64]) -> Option<MeanCi> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return Some((mean, None));
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let t = T95.get(v.len() - 2).copied().unwrap_or(1.960);
    Some((mean, Some(t * (var / n).sqrt())))
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// Writes `sweep.csv`, `sweep.md` and the plots.
fn write(out: &Path, sets: &[(String, Vec<String>)], runs: &[SweepRun]) -> Result<(), RunError> {
    let mut csv = String::new();
    for (f, _) in sets {
        let _ = write!(csv, "{f},");
    }
    csv.push_str("seed");
    for (name, _) in FIGURES {
        let _ = write!(csv, ",{name}");
    }
    csv.push('\n');
    for r in runs {
        for v in &r.point {
            let _ = write!(csv, "{},", v.replace(',', ";"));
        }
        let _ = write!(csv, "{}", r.seed);
        for (_, f) in FIGURES {
            let _ = write!(
                csv,
                ",{}",
                f(&r.summary).map_or(String::new(), |v| v.to_string())
            );
        }
        csv.push('\n');
    }
    let path = out.join("sweep.csv");
    std::fs::write(&path, csv).map_err(write_err(&path))?;

    let points = grid(sets);
    let mut md = String::new();
    let seeds: Vec<u64> = {
        let mut s: Vec<u64> = runs.iter().map(|r| r.seed).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let _ = writeln!(
        md,
        "# Sweep: `{}`\n\n{} grid point(s) × {} seed(s) ({}); each cell is the mean ± the half-width of its 95 % confidence interval (Student's t over the seeds). Every run's figures are in `sweep.csv`, its report in `runs/`.\n",
        runs.first().map_or("", |r| r.summary.scenario.as_str()),
        points.len(),
        seeds.len(),
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let shown: Vec<&Figure> = FIGURES
        .iter()
        .filter(|(_, f)| runs.iter().any(|r| f(&r.summary).is_some()))
        .collect();
    let mut head = String::from("|");
    let mut rule = String::from("|");
    for (f, _) in sets {
        let _ = write!(head, " {f} |");
        rule.push_str("---|");
    }
    for (name, _) in &shown {
        let _ = write!(head, " {name} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    let mut stats: Vec<Vec<Option<MeanCi>>> = Vec::new();
    for p in &points {
        let mine: Vec<&SweepRun> = runs.iter().filter(|r| &r.point == p).collect();
        let mut row = String::from("|");
        for v in p {
            let _ = write!(row, " {v} |");
        }
        let mut point_stats = Vec::new();
        for (_, f) in &shown {
            let values: Vec<f64> = mine.iter().filter_map(|r| f(&r.summary)).collect();
            let s = mean_ci(&values);
            let cell = match s {
                None => "–".to_string(),
                Some((m, None)) => fmt_num(m),
                Some((m, Some(h))) => format!("{} ± {}", fmt_num(m), fmt_num(h)),
            };
            let _ = write!(row, " {cell} |");
            point_stats.push(s);
        }
        stats.push(point_stats);
        let _ = writeln!(md, "{row}");
    }
    // Plots against the first swept field, when its values are numbers.
    let xs: Option<Vec<f64>> = (sets.len() == 1)
        .then(|| points.iter().map(|p| p[0].parse::<f64>().ok()).collect())
        .flatten();
    if let Some(xs) = xs {
        let field = &sets[0].0;
        let _ = writeln!(md, "\n## Against `{field}`\n");
        for name in [
            "ttfa_p50_ms",
            "ttfa_p99_ms",
            "rebuilt_share",
            "stalled_share",
        ] {
            let Some(col) = shown.iter().position(|(n, _)| *n == name) else {
                continue;
            };
            let mut mean = Vec::new();
            let mut low = Vec::new();
            let mut high = Vec::new();
            for (x, s) in xs.iter().zip(&stats) {
                if let Some((m, h)) = s[col] {
                    mean.push((*x, m));
                    low.push((*x, (m - h.unwrap_or(0.0)).max(0.0)));
                    high.push((*x, m + h.unwrap_or(0.0)));
                }
            }
            let file = format!("sweep_{name}.svg");
            crate::report::line_chart(
                &out.join(&file),
                &format!("{name} against {field}"),
                field,
                name,
                &vec![
                    ("mean".to_string(), mean),
                    ("95 % CI low".to_string(), low),
                    ("95 % CI high".to_string(), high),
                ],
            )?;
            let _ = writeln!(md, "![{name} against {field}]({file})\n");
        }
    }
    let path = out.join("sweep.md");
    std::fs::write(&path, md).map_err(write_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confidence_interval_follows_students_t() {
        assert_eq!(mean_ci(&[]), None);
        assert_eq!(mean_ci(&[4.0]), Some((4.0, None)));
        // Two values 2 apart: s = sqrt(2), half-width t(1) * s / sqrt(2) = 12.706.
        let (m, h) = mean_ci(&[1.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert!((h.unwrap() - 12.706).abs() < 1e-9);
        let (_, h) = mean_ci(&[5.0; 6]).unwrap();
        assert_eq!(h, Some(0.0));
    }

    #[test]
    fn sets_make_a_grid_of_every_combination() {
        let sets = vec![
            parse_set("workload.arrivals_per_sec=1,2").unwrap(),
            parse_set("regions.0.listeners=5,10,20").unwrap(),
        ];
        let g = grid(&sets);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec!["1", "5"]);
        assert_eq!(g[5], vec!["2", "20"]);
        assert!(parse_set("nofield").is_err());
        assert!(parse_set("a=1,,2").is_err());
        let mut doc: toml::Value =
            toml::from_str("[workload]\narrivals_per_sec = 1.0\n[[regions]]\nlisteners = 3\n")
                .unwrap();
        set_field(&mut doc, "workload.arrivals_per_sec", toml_value("2.5")).unwrap();
        set_field(&mut doc, "regions.0.listeners", toml_value("7")).unwrap();
        assert_eq!(doc["workload"]["arrivals_per_sec"].as_float(), Some(2.5));
        assert_eq!(doc["regions"][0]["listeners"].as_integer(), Some(7));
        assert!(set_field(&mut doc, "regions.4.listeners", toml_value("1")).is_err());
        assert_eq!(toml_value("eu-west").as_str(), Some("eu-west"));
    }
}
