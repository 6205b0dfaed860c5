//! The web dashboard in a real browser: Playwright (`tests/browser/dashboard.cjs`) drives
//! Debian's Chromium against `mops serve` with a token, while this test runs `mops demo`
//! against the same server and then checks what the browser saw against the CLI; a second
//! script (`tests/browser/calibration.cjs`) walks the calibration views of a larger demo job.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use modelops_integration_tests::{MopsProcess, mops_binary, required_env, text};

/// The first job `mops demo` printed (its line "demo-…: N simulations (…").
fn first_demo_job(demo_out: &str) -> String {
    demo_out
        .lines()
        .find(|l| l.starts_with("demo-") && l.contains(" simulations ("))
        .and_then(|l| l.split_once(':'))
        .map(|(job, _)| job.to_owned())
        .unwrap_or_else(|| panic!("no job line in {demo_out}"))
}

/// The header and first row of a CSV the CLI printed, as (column → value).
fn first_csv_row(csv: &str) -> std::collections::HashMap<String, String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    header.into_iter().map(str::to_owned).zip(row.into_iter().map(str::to_owned)).collect()
}

#[test]
fn browser_watches_the_demo_job_succeed_live_and_finds_its_landscape_and_best_row() {
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("token");
    std::fs::write(&token, "dashboard-s3cret\n").unwrap();
    let token_arg = token.to_str().unwrap();
    let server = MopsProcess::serve(home.path(), &["--auth-token-file", token_arg]);
    let screenshot = std::env::var("MOPS_DASHBOARD_SCREENSHOT").unwrap_or_else(|_| home.path().join("job-page.png").display().to_string());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser/dashboard.cjs");

    let browser_log = home.path().join("browser.log");
    let mut browser = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", required_env("MOPS_TEST_NODE_MODULES"))
        .env("MOPS_TEST_CHROMIUM", required_env("MOPS_TEST_CHROMIUM"))
        .env("MOPS_DASHBOARD_URL", format!("http://127.0.0.1:{}", server.http_port))
        .env("MOPS_DASHBOARD_TOKEN", "dashboard-s3cret")
        .env("MOPS_DASHBOARD_SCREENSHOT", &screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&browser_log).unwrap()))
        .spawn()
        .expect("node (installed by scripts/install-test-tools.sh)");
    let mut stdin = browser.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut wait_for = |prefix: &str| -> String {
        loop {
            match lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].trim().to_owned(),
                Ok(_) => {}
                Err(error) => {
                    let _ = browser.kill();
                    let _ = browser.wait();
                    panic!("no {prefix:?} from the browser ({error}); its log:\n{}", std::fs::read_to_string(&browser_log).unwrap_or_default());
                }
            }
        }
    };
    wait_for("READY");

    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let home_arg = home.path().to_str().unwrap();
    let demo = Command::new(mops_binary())
        .args(["demo", "--endpoint", &endpoint, "--auth-token-file", token_arg, "--home", home_arg, "--n-samples", "16", "--n-replicates", "2"])
        .output()
        .unwrap();
    let demo_out = text(&demo.stdout);
    assert!(demo.status.success(), "{demo_out}\n{}", text(&demo.stderr));
    let job = first_demo_job(&demo_out);
    writeln!(stdin, "{job}").unwrap();
    stdin.flush().unwrap();
    let result = wait_for("RESULT ");
    let status = browser.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&browser_log).unwrap_or_default());
    let seen: serde_json::Value = serde_json::from_str(&result).unwrap();

    // Watched live: the job was not on the page at load, the page was never reloaded, and its
    // row went through at least one other status before succeeded.
    assert_eq!(seen["job"], job.as_str());
    assert_eq!(seen["mark"], "loaded-once", "{result}");
    assert!(!seen["before"].as_array().unwrap().iter().any(|j| j == job.as_str()), "{result}");
    let statuses: Vec<&str> = seen["seen"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{result}");
    assert!(statuses.len() >= 2 && statuses[0] != "succeeded", "{result}");
    assert!(seen["problems"].as_array().unwrap().is_empty(), "{result}");

    let mops = |args: &[&str]| {
        let out = Command::new(mops_binary())
            .args(args)
            .env("MOPS_ENDPOINT", &endpoint)
            .env("MOPS_AUTH_TOKEN_FILE", token_arg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // One landscape per parameter of the table, each with points.
    let table = mops(&["results", "losses", &job, "--format", "csv", "--max-rows", "1"]);
    let params: Vec<String> = table
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter_map(|c| c.strip_prefix("param_"))
        .filter(|c| *c != "id")
        .map(str::to_owned)
        .collect();
    let plotted: Vec<String> = seen["landscapes"].as_array().unwrap().iter().map(|l| l["param"].as_str().unwrap().to_owned()).collect();
    assert!(!params.is_empty());
    assert_eq!(plotted, params, "{result}");
    assert!(seen["landscapes"].as_array().unwrap().iter().all(|l| l["points"].as_u64() > Some(0)), "{result}");
    assert!(seen["histogram"].as_u64() > Some(0), "{result}");
    // The page's attribution counts, by kind, are the CLI's.
    let shown: serde_json::Value = serde_json::from_str(&mops(&["attribution", "show", &job, "--format", "json"])).unwrap();
    for name in ["sims", "sims_computed", "sims_cache_hits", "aggs", "aggs_computed", "aggs_cache_hits", "missing"] {
        assert_eq!(seen["counts"][name].as_u64(), shown[name].as_u64(), "{name}: {result} against {shown}");
    }
    assert!(seen["counts"]["sims_computed"].as_u64() > Some(0) && seen["counts"]["aggs_computed"].as_u64() > Some(0), "{result}");
    let downloads = seen["downloads"].to_string();
    assert!(downloads.contains(&format!("/jobs/{job}/losses.parquet")) && downloads.contains(&format!("/jobs/{job}/losses.csv")));

    // The best row the CLI reports is the first row of its target on the page.
    let best = first_csv_row(&mops(&["results", "best", "--target", "prevalence_target", "-n", "1", "--format", "csv"]));
    let on_page = seen["best"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["target"] == best["target"].as_str())
        .unwrap_or_else(|| panic!("no best row of {} on the page: {result}", best["target"]));
    assert_eq!(on_page["param_id"], best["param_id"].as_str(), "{result}");
    let cli_loss: f64 = best["loss"].parse().unwrap();
    assert!((on_page["loss"].as_f64().unwrap() - cli_loss).abs() <= 1e-9 * cli_loss.abs().max(1.0));

    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    assert!(server.terminate().success());
}

#[test]
fn browser_shows_the_demo_r0_ridge_filters_in_the_url_and_the_row_under_the_pointer() {
    let home = tempfile::tempdir().unwrap();
    let server = MopsProcess::serve(home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let home_arg = home.path().to_str().unwrap();
    // Enough sets for the plane of two parameters to show its ridge; two jobs for the history.
    let demo = Command::new(mops_binary())
        .args(["demo", "--endpoint", &endpoint, "--home", home_arg, "--n-samples", "256", "--n-replicates", "2", "--overlap"])
        .output()
        .unwrap();
    let demo_out = text(&demo.stdout);
    assert!(demo.status.success(), "{demo_out}\n{}", text(&demo.stderr));
    let job = first_demo_job(&demo_out);

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser/calibration.cjs");
    let shots = std::env::var("MOPS_SCREENSHOT_DIR").ok();
    let mut command = Command::new("node");
    command
        .arg(&script)
        .env("NODE_PATH", required_env("MOPS_TEST_NODE_MODULES"))
        .env("MOPS_TEST_CHROMIUM", required_env("MOPS_TEST_CHROMIUM"))
        .env("MOPS_DASHBOARD_URL", format!("http://127.0.0.1:{}", server.http_port))
        .env("MOPS_DASHBOARD_JOB", &job);
    if let Some(shots) = &shots {
        command.env("MOPS_SCREENSHOT_DIR", shots);
    }
    let out = command.output().expect("node (installed by scripts/install-test-tools.sh)");
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no RESULT in {stdout}"));
    let seen: serde_json::Value = serde_json::from_str(result).unwrap();
    assert!(seen["problems"].as_array().unwrap().is_empty(), "{result}");

    // By default the pair that interacts most: β and γ, whose ratio R0 decides the epidemic.
    let initial = &seen["initial"];
    let pair = [initial["x"].as_str().unwrap(), initial["y"].as_str().unwrap()];
    assert!(pair == ["beta", "gamma"] || pair == ["gamma", "beta"], "{result}");
    // The best cell lies on the ridge R0 = β/γ = 3 of the truth: the ratios its corners span,
    // widened by one cell's width either way, include 3.
    let cells = initial["cells"].as_array().unwrap();
    let best: Vec<&serde_json::Value> = cells.iter().filter(|c| c["best"] == true).collect();
    assert_eq!(best.len(), 1, "{result}");
    let lowest = cells.iter().map(|c| c["value"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert_eq!(best[0]["value"].as_f64(), Some(lowest));
    let f = |c: &serde_json::Value, k: &str| c[k].as_f64().unwrap();
    let (beta, gamma) = if pair[0] == "beta" { (("x0", "x1"), ("y0", "y1")) } else { (("y0", "y1"), ("x0", "x1")) };
    let (b0, b1, g0, g1) = (f(best[0], beta.0), f(best[0], beta.1), f(best[0], gamma.0), f(best[0], gamma.1));
    let (db, dg) = (b1 - b0, g1 - g0);
    let truth = 0.3 / 0.1;
    assert!((b0 - db) / (g1 + dg) <= truth && truth <= (b1 + db) / (g0 - dg).max(1e-9), "best cell β {b0}–{b1}, γ {g0}–{g1}: {result}");
    // Every row of the target is in a cell; the plot fills its card at 1400 px.
    let rows: u64 = cells.iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(rows, 256, "{result}");
    assert!(seen["width"].as_f64().unwrap() >= 700.0, "{result}");

    // Hovering the lowest point shows the best row of the target: its id and its loss.
    let best_row = &seen["bestRow"];
    let tooltip = seen["tooltip"].as_str().unwrap();
    assert!(tooltip.contains(best_row["param_id"].as_str().unwrap()), "{tooltip} against {best_row}");
    assert_eq!(initial["points"][0]["param_id"], best_row["param_id"], "{result}");
    assert_eq!(initial["points"][0]["loss"].as_f64(), best_row["loss"].as_f64(), "{result}");

    // Brushing β on the parallel coordinates shows exactly the sets in the brushed range.
    let brushed = &seen["brushed"];
    let (index, range) = (brushed["index"].as_u64().unwrap() as usize, brushed["range"].as_array().unwrap());
    let (lo, hi) = (range[0].as_f64().unwrap(), range[1].as_f64().unwrap());
    let inside = |line: &serde_json::Value| (lo..=hi).contains(&line[index].as_f64().unwrap());
    let all = brushed["all"].as_array().unwrap();
    let visible = brushed["visible"].as_array().unwrap();
    let expected = all.iter().filter(|l| inside(l)).count();
    assert!(lo < hi && expected > 0 && expected < all.len(), "{result}");
    assert_eq!(visible.len(), expected, "{result}");
    assert!(visible.iter().all(inside), "{result}");
    assert_eq!(brushed["shown"].as_u64(), Some(expected as u64));
    assert_eq!(brushed["counter"].as_str(), Some(format!("{expected} of {} shown", all.len()).as_str()), "{result}");

    // The best 10 % filter is in the URL and keeps 26 of the 256 rows, all at or below the
    // lowest loss of the rows it drops.
    assert!(seen["keptUrl"].as_str().unwrap().contains("keep=10"), "{result}");
    let kept: u64 = seen["kept"]["cells"].as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(kept, 26, "{result}");
    // Clicking another pair of the matrix shows it.
    let switched = &seen["switched"];
    assert_eq!((switched["x"].as_str(), switched["y"].as_str()), (seen["next"]["x"].as_str(), seen["next"]["y"].as_str()), "{result}");
    assert_eq!(seen["importance"].as_array().unwrap().len(), 3, "{result}");

    // The jobs list and the history have the job with its lowest loss.
    assert_eq!(seen["listed"]["sets"], "256", "{result}");
    assert_eq!(seen["listed"]["target"].as_str(), seen["target"].as_str(), "{result}");
    let on_history = seen["history"].as_array().unwrap().iter().find(|p| p["job"] == job.as_str()).unwrap_or_else(|| panic!("{result}"));
    assert_eq!(on_history["loss"].as_f64(), best_row["loss"].as_f64(), "{result}");
    assert!(seen["historyTooltip"].as_str().unwrap().contains(&job), "{result}");

    // A click on the lowest point opened its parameter set: its values, its loss ranked first,
    // each replicate's loss (the demo reports them), its prevalence output as a band over the two
    // replicates, and its simulations and aggregation.
    let set = &seen["set"];
    assert_eq!(set["param_id"], best_row["param_id"], "{result}");
    assert_eq!(set["url"].as_str(), Some(format!("/jobs/{job}/sets/{}", best_row["param_id"].as_str().unwrap()).as_str()), "{result}");
    assert_eq!(set["values"], serde_json::json!(["beta", "sigma", "gamma"]), "{result}");
    assert_eq!(set["losses"][0]["loss"].as_f64(), best_row["loss"].as_f64(), "{result}");
    assert_eq!(set["losses"][0]["rank"], 1, "{result}");
    let replicate_losses: Vec<f64> = set["replicates"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
    assert_eq!(replicate_losses.len(), 2, "{result}");
    assert_eq!(set["strips"], 2, "{result}");
    assert!(replicate_losses.iter().all(|l| l.is_finite() && *l >= 0.0), "{result}");
    let bands = set["bands"].as_array().unwrap();
    let prevalence = bands.iter().find(|b| b["output"] == "prevalence" && b["column"] == "prevalence").unwrap_or_else(|| panic!("{result}"));
    assert_eq!(prevalence["replicates"], 2, "{result}");
    assert!(prevalence["lo"].as_f64().unwrap() >= 0.0 && prevalence["hi"].as_f64().unwrap() <= 1.0 && prevalence["hi"].as_f64() > prevalence["lo"].as_f64(), "{result}");
    assert_eq!(bands.len(), 6, "every count and prevalence column of the demo's output: {result}");
    let kinds: Vec<&str> = set["results"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(kinds, ["sim", "sim", "agg"], "{result}");
    assert!(set["python"].as_str().unwrap().contains(&format!("get_losses(\"{job}\")")), "{result}");
    // The outputs of the three best sets: the best first, each column a band of two replicates
    // for each of the three.
    let outputs = &seen["outputs"];
    assert_eq!(outputs["legend"].as_array().unwrap().len(), 3, "{result}");
    assert_eq!(outputs["legend"][0], best_row["param_id"], "{result}");
    assert_eq!(outputs["figures"], serde_json::json!(vec![vec![2, 2, 2]; 6]), "{result}");
    // Dragging across the middle of the heat map zoomed on the dragged ranges of both parameters:
    // the same pair, every cell inside them, fewer rows than the whole target, and a way back.
    let zoomed = &seen["zoomed"];
    let (xr, yr) = (zoomed["xrange"].as_array().unwrap(), zoomed["yrange"].as_array().unwrap());
    let (x0, x1, y0, y1) = (xr[0].as_f64().unwrap(), xr[1].as_f64().unwrap(), yr[0].as_f64().unwrap(), yr[1].as_f64().unwrap());
    assert!(x0 < x1 && y0 < y1, "{result}");
    let map = &zoomed["map"];
    assert_eq!((map["x"].as_str(), map["y"].as_str()), (initial["x"].as_str(), initial["y"].as_str()), "{result}");
    let cells = map["cells"].as_array().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(cells.iter().all(|c| f(c, "x0") >= x0 - 1e-12 && f(c, "x1") <= x1 + 1e-9 && f(c, "y0") >= y0 - 1e-12 && f(c, "y1") <= y1 + 1e-9), "{result}");
    assert!(cells.iter().any(|c| close(f(c, "x0"), x0)), "the axis starts at the zoom: {result}");
    let inside: u64 = cells.iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert!(inside > 0 && inside < 256, "{result}");
    assert!(zoomed["note"].as_str().unwrap().contains("Zoomed on"), "{result}");
    // The compare page overlays the two demo jobs: all 256 rows of each, one plot per parameter.
    let overlay = &seen["overlay"];
    assert_eq!((overlay["rowsA"].as_u64(), overlay["rowsB"].as_u64()), (Some(256), Some(256)), "{result}");
    assert_eq!(overlay["params"], serde_json::json!(["beta", "sigma", "gamma"]), "{result}");
    assert_eq!(overlay["histogram"], 1, "{result}");
    assert!(server.terminate().success());
}

#[test]
fn browser_watches_a_running_demo_jobs_provisional_landscape_grow_until_its_table_replaces_it() {
    let home = tempfile::tempdir().unwrap();
    let server = MopsProcess::serve(home.path(), &[]);
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    // 128 sets at 80 ms each: about ten seconds of reports for the page to follow.
    let demo = Command::new(mops_binary())
        .args(["demo", "--endpoint", &endpoint, "--home", home.path().to_str().unwrap()])
        .args(["--n-samples", "128", "--n-replicates", "2", "--set-delay-ms", "80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser/live.cjs");
    let mut command = Command::new("node");
    command
        .arg(&script)
        .env("NODE_PATH", required_env("MOPS_TEST_NODE_MODULES"))
        .env("MOPS_TEST_CHROMIUM", required_env("MOPS_TEST_CHROMIUM"))
        .env("MOPS_DASHBOARD_URL", format!("http://127.0.0.1:{}", server.http_port));
    if let Ok(shots) = std::env::var("MOPS_SCREENSHOT_DIR") {
        command.env("MOPS_SCREENSHOT_DIR", shots);
    }
    let out = command.output().expect("node (installed by scripts/install-test-tools.sh)");
    let demo = demo.wait_with_output().unwrap();
    let demo_out = text(&demo.stdout);
    assert!(demo.status.success(), "{demo_out}\n{}", text(&demo.stderr));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no RESULT in {stdout}"));
    let seen: serde_json::Value = serde_json::from_str(result).unwrap();
    assert!(seen["problems"].as_array().unwrap().is_empty(), "{result}");
    assert_eq!(seen["job"].as_str(), Some(first_demo_job(&demo_out).as_str()), "{result}");

    // The page grew at least three times without a reload, while the job was running, and drew
    // the two-parameter view before the job ended; it never showed more than the job expects.
    let rows: Vec<u64> = seen["seen"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!(rows.len(), 4, "{result}");
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{result}");
    assert!(rows[3] <= seen["expected"].as_u64().unwrap() && seen["expected"] == 128, "{result}");
    assert!(seen["statusWhileGrowing"].as_array().unwrap()[..2].iter().all(|s| s == "running"), "{result}");
    assert_eq!(seen["drawnWhileRunning"], true, "{result}");
    // Then the final table replaced it.
    assert_eq!(seen["finalRows"], 128, "{result}");
    assert_eq!(seen["provisionalAfter"], -1, "{result}");
    assert!(server.terminate().success());
}

/// Writes a job of `sets` parameter sets (beta, gamma, contacts) × 2 targets straight into the
/// results store under `home`, with the indexer's own table writer.
fn write_large_job(home: &std::path::Path, job: &str, sets: usize) {
    use modelops_core::pyjson::PyObject;
    use modelops_indexer::build::{IndexOptions, TableWriter};
    use modelops_indexer::columns::{ParamColumn, ParamType};
    use modelops_indexer::table::{Row, RowStatus};
    use rand::{Rng, SeedableRng};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let results = modelops_core::store::Store::open(&format!("file://{}/results", home.display())).unwrap();
        let columns = vec![
            ParamColumn { name: "beta".into(), kind: ParamType::Float },
            ParamColumn { name: "gamma".into(), kind: ParamType::Float },
            ParamColumn { name: "contacts".into(), kind: ParamType::Int },
        ];
        let targets = vec!["targets.prev:prevalence".to_owned(), "targets.deaths:deaths".to_owned()];
        let options = IndexOptions { batch_rows: 16 * 1024, ..IndexOptions::default() };
        let job_id = modelops_core::job::JobId::new(job).unwrap();
        let bundle = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut writer = TableWriter::new(std::sync::Arc::clone(&results.object_store), &job_id, bundle, targets.clone(), columns, options).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for set in 0..sets {
            let (beta, gamma): (f64, f64) = (rng.random_range(0.05..0.6), rng.random_range(0.05..0.3));
            let mut values = PyObject::new();
            values.insert("beta", beta.into());
            values.insert("gamma", gamma.into());
            values.insert("contacts", rng.random_range(1..50_i64).into());
            for (t, target) in targets.iter().enumerate() {
                // A ridge along beta / gamma = 3, as the demo's.
                let loss = (beta / gamma - 3.0).powi(2) + 0.1 * t as f64 + rng.random_range(0.0..0.05);
                let row = Row {
                    param_id: format!("{set:064x}"),
                    values: values.clone(),
                    target: target.clone(),
                    loss: Some(loss),
                    n_replicates: Some(3),
                    computed_at: Some(1_700_000_000_000_000 + set as i64),
                    cache_hit: false,
                    status: RowStatus::Ok,
                };
                writer.push(row, None).await.unwrap();
            }
        }
        writer.commit(format!("large-{sets}")).await.unwrap();
    });
}

#[test]
fn browser_loads_the_page_of_a_million_row_job_with_every_view_drawn_from_bounded_data() {
    let home = tempfile::tempdir().unwrap();
    write_large_job(home.path(), "job-million", 500_000);
    let server = MopsProcess::serve(home.path(), &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser/large.cjs");
    let out = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", required_env("MOPS_TEST_NODE_MODULES"))
        .env("MOPS_TEST_CHROMIUM", required_env("MOPS_TEST_CHROMIUM"))
        .env("MOPS_DASHBOARD_URL", format!("http://127.0.0.1:{}", server.http_port))
        .env("MOPS_DASHBOARD_JOB", "job-million")
        .output()
        .expect("node (installed by scripts/install-test-tools.sh)");
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or_else(|| panic!("no RESULT in {stdout}"));
    let seen: serde_json::Value = serde_json::from_str(result).unwrap();
    assert!(seen["problems"].as_array().unwrap().is_empty(), "{result}");
    assert!(seen["summary"].as_str().unwrap().starts_with("1000000 rows: 1000000 ok"), "{result}");
    // Every row of the first target is in a cell of the heat map; everything else is bounded.
    let counted: u64 = seen["cells"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(counted, 500_000, "{result}");
    assert!(seen["cells"].as_array().unwrap().len() <= 32 * 32, "{result}");
    assert_eq!(seen["pairs"], 3, "{result}");
    assert!(seen["lines"].as_u64().unwrap() <= 1000 && seen["lines"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(seen["slices"], 3, "{result}");
    assert!(seen["slicePoints"].as_array().unwrap().iter().all(|n| n.as_u64().unwrap() <= 2_100), "{result}");
    assert_eq!(seen["histogram"], 1, "{result}");
    assert_eq!(seen["best"], 20, "{result}");
    assert!(seen["bytes"].as_u64().unwrap() < 4 << 20, "the page stays small: {result}");
    assert!(server.terminate().success());
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the dashboard needs no client library to be checked).
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test]
async fn a_query_only_server_shows_the_jobs_of_a_registry_in_another_process_live() {
    use modelops_integration_tests::{channel, etcd_url, move_through, register_study, unique};
    use modelops_proto::registry::v1 as registry_pb;
    use std::io::Read;

    let store = etcd_url(&unique("dashboard-split"));
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let registry = MopsProcess::serve(home_a.path(), &["registry", "--registry-store", &store]);
    let query = MopsProcess::serve(home_b.path(), &["query", "--registry-endpoint", &format!("http://127.0.0.1:{}", registry.port)]);
    let channel = channel(&format!("http://127.0.0.1:{}", registry.port)).await;
    let job = unique("job-split");
    let study = include_str!("../../../crates/core/tests/fixtures/upstream/study_plain.json");
    register_study(&channel, &job, study, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").await;

    // The query pod's dashboard lists the job (through the registry's ListJobs).
    let page = http_get(query.http_port, "/jobs");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(&format!("<tr data-job=\"{job}\" data-status=\"pending\"")), "{page}");
    let events_path = page
        .split("data-events=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page names its event stream")
        .to_owned();

    // A change made through the registry process reaches the query process's event stream
    // through the registry's WatchJobs.
    let mut events = std::net::TcpStream::connect(("127.0.0.1", query.http_port)).unwrap();
    write!(events, "GET {events_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    move_through(&channel, &job, &[registry_pb::JobStatus::Submitting]).await;
    events.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    let wanted = format!("\"job_id\":\"{job}\",\"status\":\"submitting\"");
    while !seen.contains(&wanted) {
        assert!(std::time::Instant::now() < deadline, "no submitting event within 20 s:\n{seen}");
        let mut chunk = [0u8; 8192];
        if let Ok(n) = events.read(&mut chunk) {
            seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(registry.terminate().success() && query.terminate().success());
}
