//! Results of a `compare` run: every sample kept (CSV), a summary table per
//! workload and tool (printed as Markdown, and as CSV), the targets checked
//! against the best peer of the same run, and an SVG chart drawn by hand.

use std::fmt::Write as _;

use anyhow::Context;

use super::{Args, Sizes};

/// One measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    pub tool: String,
    pub workload: String,
    pub rep: usize,
    pub wall_s: f64,
    pub payload_bytes: u64,
    pub wire_a: u64,
    pub wire_total: u64,
    pub cpu_s: f64,
    pub peak_kib: u64,
}

/// Everything measured in a run.
#[derive(Debug, Default)]
pub struct Results {
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
}

/// The summary of one (workload, tool).
#[derive(Debug, Clone)]
struct Row {
    workload: String,
    tool: String,
    n: usize,
    min_s: f64,
    median_s: f64,
    p99_s: f64,
    mb_s: f64,
    wire_a: u64,
    wire_total: u64,
    cpu_s: f64,
    peak_kib: u64,
}

/// The median: the mean of the two middle values when their count is even.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median_u64(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    if f.is_empty() {
        0
    } else {
        median(&f).round() as u64
    }
}

/// Reads back the samples of an earlier run's CSV (to summarize it again).
pub fn read_csv(path: &std::path::Path) -> anyhow::Result<Results> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = Results::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        anyhow::ensure!(f.len() == 9, "unexpected CSV line {line:?}");
        r.samples.push(Sample {
            tool: f[0].to_string(),
            workload: f[1].to_string(),
            rep: f[2].parse()?,
            wall_s: f[3].parse()?,
            payload_bytes: f[4].parse()?,
            wire_a: f[5].parse()?,
            wire_total: f[6].parse()?,
            cpu_s: f[7].parse()?,
            peak_kib: f[8].parse()?,
        });
    }
    Ok(r)
}

const ORDER: [&str; 7] = ["W1", "W2", "W3a", "W3b", "W4", "W5seed", "W5"];

fn summarize(results: &Results, tools: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in ORDER {
        for tool in tools {
            let s: Vec<&Sample> =
                results.samples.iter().filter(|s| s.workload == w && &s.tool == tool).collect();
            if s.is_empty() {
                continue;
            }
            let mut walls: Vec<f64> = s.iter().map(|x| x.wall_s).collect();
            walls.sort_by(f64::total_cmp);
            let median_s = median(&walls);
            let mut payload: Vec<u64> = s.iter().map(|x| x.payload_bytes).collect();
            let payload = median_u64(&mut payload);
            let mut cpus: Vec<f64> = s.iter().map(|x| x.cpu_s).collect();
            cpus.sort_by(f64::total_cmp);
            rows.push(Row {
                workload: w.to_string(),
                tool: tool.clone(),
                n: s.len(),
                min_s: walls[0],
                median_s,
                p99_s: quantile(&walls, 0.99),
                mb_s: payload as f64 / median_s / 1e6,
                wire_a: median_u64(&mut s.iter().map(|x| x.wire_a).collect::<Vec<_>>()),
                wire_total: median_u64(&mut s.iter().map(|x| x.wire_total).collect::<Vec<_>>()),
                cpu_s: median(&cpus),
                peak_kib: s.iter().map(|x| x.peak_kib).max().unwrap_or(0),
            });
        }
    }
    rows
}

fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| workload | tool | n | min | median | p99 | throughput | wire (A's link) | wire (all) | client CPU | client peak RSS |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let thr = if matches!(r.workload.as_str(), "W1" | "W2" | "W5seed") {
            format!("{:.1} MB/s", r.mb_s)
        } else {
            "".into()
        };
        let p99 = if r.workload == "W4" { secs(r.p99_s) } else { "".into() };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s | {:.0} MiB |",
            r.workload,
            r.tool,
            r.n,
            secs(r.min_s),
            secs(r.median_s),
            p99,
            thr,
            bytes(r.wire_a),
            bytes(r.wire_total),
            r.cpu_s,
            r.peak_kib as f64 / 1024.0
        );
    }
    t
}

fn targets(rows: &[Row]) -> String {
    let get = |w: &str, tool: &str| rows.iter().find(|r| r.workload == w && r.tool == tool);
    let best_peer = |w: &str, key: &dyn Fn(&Row) -> f64| {
        rows.iter()
            .filter(|r| r.workload == w && !r.tool.starts_with("coffer"))
            .min_by(|a, b| key(a).total_cmp(&key(b)))
    };
    let mut t = String::new();
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    for w in ["W1", "W2"] {
        if let (Some(c), Some(p)) = (get(w, "coffer"), best_peer(w, &|r| r.median_s)) {
            let x = p.median_s / c.median_s;
            let _ = writeln!(
                t,
                "- {w}: Coffer {} vs best peer {} {} = {x:.2}x (target >= 2x): {}",
                secs(c.median_s),
                p.tool,
                secs(p.median_s),
                mark(x >= 2.0)
            );
        }
    }
    for w in ["W3a", "W3b"] {
        if let (Some(c), Some(p), Some(pb)) =
            (get(w, "coffer"), best_peer(w, &|r| r.median_s), best_peer(w, &|r| r.wire_total as f64))
        {
            let x = p.median_s / c.median_s;
            let _ = writeln!(
                t,
                "- {w}: bytes Coffer {} vs fewest of a peer {} {} (target <=): {}; time Coffer {} vs best peer {} {} = {x:.2}x (target >= 4x): {}",
                bytes(c.wire_total),
                pb.tool,
                bytes(pb.wire_total),
                mark(c.wire_total <= pb.wire_total),
                secs(c.median_s),
                p.tool,
                secs(p.median_s),
                mark(x >= 4.0)
            );
        }
    }
    if let Some(c) = get("W4", "coffer") {
        let _ = writeln!(
            t,
            "- W4: Coffer p50 {} (target < 200 ms): {}; p99 {} (target < 1 s): {}",
            secs(c.median_s),
            mark(c.median_s < 0.2),
            secs(c.p99_s),
            mark(c.p99_s < 1.0)
        );
    }
    if let Some(c) = get("W5", "coffer") {
        let _ = writeln!(
            t,
            "- W5: Coffer idle rescan {} (target < 5 s): {}; client memory {:.0} MiB (target < 300 MB): {}",
            secs(c.median_s),
            mark(c.median_s < 5.0),
            c.peak_kib as f64 / 1024.0,
            mark((c.peak_kib * 1024) < 300_000_000)
        );
    }
    t
}

fn csv(results: &Results) -> String {
    let mut c = String::from(
        "tool,workload,rep,wall_s,payload_bytes,wire_a_bytes,wire_total_bytes,client_cpu_s,client_peak_kib\n",
    );
    for s in &results.samples {
        let _ = writeln!(
            c,
            "{},{},{},{:.6},{},{},{},{:.3},{}",
            s.tool, s.workload, s.rep, s.wall_s, s.payload_bytes, s.wire_a, s.wire_total, s.cpu_s, s.peak_kib
        );
    }
    c
}

fn summary_csv(rows: &[Row]) -> String {
    let mut c = String::from("workload,tool,n,min_s,median_s,p99_s,throughput_mb_s,wire_a_bytes,wire_total_bytes,client_cpu_s,client_peak_kib\n");
    for r in rows {
        let _ = writeln!(
            c,
            "{},{},{},{:.6},{:.6},{:.6},{:.3},{},{},{:.3},{}",
            r.workload,
            r.tool,
            r.n,
            r.min_s,
            r.median_s,
            r.p99_s,
            r.mb_s,
            r.wire_a,
            r.wire_total,
            r.cpu_s,
            r.peak_kib
        );
    }
    c
}

const COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Small multiples: one panel per workload, one bar per tool (median wall
/// time; W4 median latency; W5 idle rescan), each panel on its own scale.
fn svg(rows: &[Row], tools: &[String], title: &str) -> String {
    let panels: Vec<&str> = ORDER.iter().copied().filter(|w| rows.iter().any(|r| r.workload == *w)).collect();
    let (pw, bar_h, gap) = (460.0, 18.0, 6.0);
    let ph = 40.0 + tools.len() as f64 * (bar_h + gap);
    let cols = 2usize;
    let nrows = panels.len().div_ceil(cols);
    let (w, h) = (pw * cols as f64 + 40.0, 60.0 + ph * nrows as f64);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = writeln!(s, r#"<text x="20" y="28" font-size="16" font-weight="bold">{}</text>"#, esc(title));
    for (i, wl) in panels.iter().enumerate() {
        let x0 = 20.0 + (i % cols) as f64 * pw;
        let y0 = 50.0 + (i / cols) as f64 * ph;
        let label = match *wl {
            "W1" => "W1: one new big file (median wall time)",
            "W2" => "W2: many small files (median wall time)",
            "W3a" => "W3a: 1-byte change in place (median)",
            "W3b" => "W3b: 10 bytes inserted (median)",
            "W4" => "W4: small-file latency (p50)",
            "W5seed" => "W5 setup: the big tree's first sync",
            _ => "W5: idle rescan, nothing changed (median)",
        };
        let _ = writeln!(s, r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#, y0 + 14.0, esc(label));
        let mine: Vec<&Row> =
            tools.iter().filter_map(|t| rows.iter().find(|r| r.workload == *wl && &r.tool == t)).collect();
        let max = mine.iter().map(|r| r.median_s).fold(0.0f64, f64::max).max(1e-9);
        for (j, tool) in tools.iter().enumerate() {
            let y = y0 + 24.0 + j as f64 * (bar_h + gap);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                x0 + 90.0,
                y + 13.0,
                esc(tool)
            );
            let Some(r) = mine.iter().find(|r| &r.tool == tool) else {
                let _ =
                    writeln!(s, r#"<text x="{}" y="{}" fill="gray">no result</text>"#, x0 + 96.0, y + 13.0);
                continue;
            };
            let bw = (r.median_s / max) * (pw - 200.0);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{y:.1}" width="{bw:.1}" height="{bar_h}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x0 + 96.0,
                COLORS[j % COLORS.len()],
                x0 + 100.0 + bw,
                y + 13.0,
                secs(r.median_s)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Prints the table and targets; writes the CSVs and the chart.
pub fn finish(
    results: &Results,
    sizes: &Sizes,
    args: &Args,
    started: std::time::SystemTime,
) -> anyhow::Result<()> {
    let rows = summarize(results, &args.tools);
    let when = started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mode = if args.quick { "quick" } else { "full" };
    let stem = match &args.label {
        Some(l) => format!("compare-{mode}-{l}"),
        None => format!("compare-{mode}"),
    };
    println!(
        "\nSide by side ({mode}: W1 {} MiB, W2 {} files, W3 insert at {} MiB, W4 {} samples, W5 {} files; {} rounds; started at unix {when})\n",
        sizes.w1_bytes >> 20,
        sizes.w2_files,
        sizes.w3_insert_at >> 20,
        sizes.w4_samples,
        sizes.w5_files,
        sizes.reps
    );
    print!("{}", table(&rows));
    println!("\nTargets (Coffer against the best peer in this run):");
    print!("{}", targets(&rows));
    if !results.failures.is_empty() {
        println!("\nFailures:");
        for f in &results.failures {
            println!("- {f}");
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let write = |name: &str, body: String| -> anyhow::Result<()> {
        let p = args.out.join(name);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
        Ok(())
    };
    write(&format!("{stem}.csv"), csv(results))?;
    write(&format!("{stem}-summary.csv"), summary_csv(&rows))?;
    write(&format!("{stem}.md"), format!("{}\n{}", table(&rows), targets(&rows)))?;
    write(&format!("{stem}.svg"), svg(&rows, &args.tools, &format!("Coffer side by side ({mode})")))?;
    Ok(())
}
