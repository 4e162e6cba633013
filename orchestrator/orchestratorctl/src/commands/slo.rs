//! `slo [GROUP]`: each group's objectives, burn rates per window and the
//! error budget left, from the daemon's SLO engine.

use anyhow::Result;
use orch_api::{SloReport, SloSli};

use super::daemon::{block_on, fail};
use crate::output::{Format, Out, Table, print_data};

pub fn run(client: &orch_api::Client, group: Option<&str>, out: &Out) -> Result<()> {
    let report: SloReport = block_on(client.slo(group))?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &report);
    }
    if report.groups.is_empty() {
        println!("no group on host {} has an `slo:`", report.host);
        return Ok(());
    }
    print!(
        "{}",
        slo_table(std::slice::from_ref(&report), out).render(out)
    );
    Ok(())
}

/// The burn-rate windows shown, besides the SLO window's budget.
const SHOWN: [&str; 4] = ["5m", "1h", "6h", "3d"];

/// `99.5%`, `99.95%`: an objective as people write it.
fn percent(ratio: f64) -> String {
    let p = format!("{:.2}", ratio * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("{p}%")
}

fn burn(sli: &SloSli, window: &str, out: &Out) -> String {
    match sli
        .windows
        .iter()
        .find(|w| w.window == window)
        .and_then(|w| w.burn_rate.or(w.error_ratio.map(|_| f64::INFINITY)))
    {
        None => "-".into(),
        Some(b) => {
            let text = if b.is_finite() {
                format!("{b:.2}x")
            } else {
                "inf".into()
            };
            // The page threshold of the fast tier, and 1x (the budget's pace).
            if b > 14.4 {
                out.red(&text)
            } else if b > 1.0 {
                out.yellow(&text)
            } else {
                text
            }
        }
    }
}

fn objective(sli: &SloSli) -> String {
    match (sli.slo.as_str(), sli.latency_threshold_ms) {
        ("latency", Some(ms)) => format!("{} <= {ms}ms", percent(sli.objective)),
        _ => percent(sli.objective),
    }
}

/// One row per SLI of each group; a HOST column when several hosts answer.
pub fn slo_table(reports: &[SloReport], out: &Out) -> Table {
    let many = reports.len() > 1;
    let mut header: Vec<String> = Vec::new();
    if many {
        header.push("HOST".into());
    }
    header.extend(["GROUP", "SLO", "OBJECTIVE"].map(String::from));
    header.extend(SHOWN.iter().map(|w| format!("BURN {w}")));
    header.extend(["BUDGET LEFT", "BAD/EVENTS"].map(String::from));
    let mut t = Table::new(header);
    for r in reports {
        for g in &r.groups {
            for s in &g.slis {
                let mut row = Vec::new();
                if many {
                    row.push(r.host.clone());
                }
                row.extend([g.group.clone(), s.slo.clone(), objective(s)]);
                row.extend(SHOWN.iter().map(|w| burn(s, w, out)));
                row.push(match s.budget_remaining {
                    None => "-".into(),
                    Some(b) if b.is_finite() => {
                        let text = format!("{:.1}% of {}", b * 100.0, s.slo_window);
                        if b < 0.0 { out.red(&text) } else { text }
                    }
                    Some(_) => out.red(&format!("overspent ({})", s.slo_window)),
                });
                row.push(format!("{}/{}", s.errors, s.events));
                t.row(row);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::{SloGroup, SloWindow};

    fn window(window: &str, events: u64, errors: u64, budget: f64) -> SloWindow {
        let ratio = (events > 0).then(|| errors as f64 / events as f64);
        SloWindow {
            window: window.into(),
            events,
            errors,
            error_ratio: ratio,
            burn_rate: ratio.map(|r| r / budget),
        }
    }

    #[test]
    fn the_table_shows_objectives_burn_rates_and_the_budget_left() {
        let out = Out {
            format: Format::Table,
            color: false,
            color_stderr: false,
        };
        let report = SloReport {
            host: "mainpc".into(),
            groups: vec![SloGroup {
                group: "vision_gpu".into(),
                slis: vec![
                    SloSli {
                        slo: "availability".into(),
                        objective: 0.995,
                        budget: 0.005,
                        latency_threshold_ms: None,
                        slo_window: "30d".into(),
                        events: 1000,
                        errors: 10,
                        budget_remaining: Some(-1.0),
                        windows: vec![window("5m", 100, 10, 0.005), window("1h", 1000, 10, 0.005)],
                    },
                    SloSli {
                        slo: "latency".into(),
                        objective: 0.99,
                        budget: 0.01,
                        latency_threshold_ms: Some(2000),
                        slo_window: "30d".into(),
                        events: 0,
                        errors: 0,
                        budget_remaining: None,
                        windows: vec![window("5m", 0, 0, 0.01)],
                    },
                ],
            }],
        };
        let text = slo_table(&[report], &out).render(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("GROUP"), "{text}");
        assert!(!lines[0].contains("HOST"), "{text}");
        fn cells(l: &str) -> Vec<&str> {
            l.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect()
        }
        assert_eq!(
            cells(lines[1]),
            [
                "vision_gpu",
                "availability",
                "99.5%",
                "20.00x",
                "2.00x",
                "-",
                "-",
                "-100.0% of 30d",
                "10/1000"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "vision_gpu",
                "latency",
                "99% <= 2000ms",
                "-",
                "-",
                "-",
                "-",
                "-",
                "0/0"
            ]
        );
    }
}
