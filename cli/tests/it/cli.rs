//! The `medallion` binary as a user meets it: exit codes, one-line errors
//! without secrets, the demo, `sql` output formats, each command's `--help`,
//! and settings from medallion.toml under the flags.

use std::process::{Command, Output};

use medallion::lake::Lake;

use crate::support::*;

fn medallion(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medallion"));
    command.args(args).env_remove("DATABASE_URL").env_remove("MEDALLION_LAKE");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the medallion binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A failed command: non-zero exit and exactly one line on stderr.
fn assert_one_line_failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure, got success: {}", stdout(output));
    let text = stderr(output);
    assert_eq!(text.trim_end().lines().count(), 1, "one line expected, got: {text}");
    assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "{text}");
    text
}

/// No data table in any layer (the run history, gold.pipeline_runs, may
/// record the failure).
fn lake_is_empty(lake: &TestLake) -> bool {
    ["bronze", "silver", "gold"].iter().all(|layer| {
        let dir = lake.dir.path().join(layer);
        !dir.exists()
            || std::fs::read_dir(&dir).unwrap().all(|e| {
                let path = e.unwrap().path();
                path.ends_with("pipeline_runs") || !path.join("_delta_log").exists()
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_one_line_naming_the_target_without_the_password() {
    let good = fresh_database("it_cli_password").await;
    let bad = good.replacen(":medallion@", ":Wr0ngSecret@", 1);
    assert_ne!(bad, good, "the test URL carries the password 'medallion'");
    let lake = TestLake::new();
    let output = medallion(&["run", "--lake", &lake.url(), "--quiet"], &[("DATABASE_URL", &bad)]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("127.0.0.1") && text.contains("it_cli_password"), "{text}");
    assert!(text.contains("password"), "says what is wrong: {text}");
    assert!(!text.contains("Wr0ngSecret"), "secret leaked: {text}");
    assert!(lake_is_empty(&lake));

    // The failure is in the run history, with the error line and no secret.
    let config = config(&lake.url(), None, "2026-11-25");
    let runs = rows(&lake_query(&config, "SELECT command, stage, status, error FROM gold.pipeline_runs").await);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0][0].text(), runs[0][1].text(), runs[0][2].text()), ("run".into(), "ingest".into(), "failed".into()));
    assert!(runs[0][3].text().contains("password") && !runs[0][3].text().contains("Wr0ngSecret"), "{runs:?}");
}

#[test]
fn unreachable_host_fails_cleanly() {
    let lake = TestLake::new();
    let output = medallion(
        &["ingest", "--lake", &lake.url(), "--quiet"],
        &[("DATABASE_URL", "postgres://u:TopSecret1@127.0.0.1:1/nowhere")],
    );
    let text = assert_one_line_failure(&output);
    assert!(text.contains("cannot connect") && text.contains("127.0.0.1:1/nowhere"), "{text}");
    assert!(!text.contains("TopSecret1"), "{text}");
    assert!(lake_is_empty(&lake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_names_it_and_leaves_the_lake_as_it_was() {
    let db = fresh_database("it_cli_empty").await;
    let lake = TestLake::new();
    let output = medallion(&["ingest", "--lake", &lake.url(), "--quiet"], &[("DATABASE_URL", &db)]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("public.orders") && text.contains("not found"), "{text}");
    assert!(lake_is_empty(&lake));
}

#[test]
fn unwritable_lake_and_bad_date_are_clear_errors() {
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let lake = format!("file://{}/lake", blocker.path().display());
    let output = medallion(&["ingest", "--lake", &lake, "--quiet", "--from-dump",
        &northwind_dump()], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("layer bronze"), "{text}");

    let output = medallion(&["run", "--date", "2026-02-30", "--quiet"], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("YYYY-MM-DD"), "{text}");

    let output = medallion(&["run", "--quiet"], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("DATABASE_URL"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_needs_no_database_and_shows_the_true_kpis() {
    let db = northwind_database("it_cli_demo").await;
    let expected = pg_rows(&db,
        "SELECT round(SUM(od.unit_price::float8 * od.quantity * (1 - od.discount::float8))::numeric, 2)::text
         FROM order_details od JOIN orders o ON o.order_id = od.order_id").await;
    let lake = TestLake::new();
    let output = medallion(&["demo", "--lake", &lake.url(), "--date", "2026-11-25", "--quiet", "--no-serve"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(&expected[0][0].text()), "total revenue {} not in:\n{text}", expected[0][0].text());
    for segment in ["Champions", "Hibernating"] {
        assert!(text.contains(segment), "{segment} missing:\n{text}");
    }

    let output = medallion(&["sql", "--lake", &lake.url(), "--format", "csv",
        "SELECT country, \"rank\" FROM gold.kpi_top_countries ORDER BY \"rank\""], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let csv = stdout(&output);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "country,rank");
    assert_eq!(lines.len(), 4);

    let output = medallion(&["sql", "--lake", &lake.url(), "--format", "json",
        "SELECT orders FROM gold.kpi_revenue"], &[]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json[0]["orders"], 830);

    let output = medallion(&["sql", "--lake", &lake.url(), "SELECT * FROM gold.nope"], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("nope"), "{text}");
}

/// The `--help` of `args` (which must succeed).
fn help(args: &[&str]) -> String {
    let output = medallion(args, &[]);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    stdout(&output)
}

#[test]
fn each_help_lists_only_the_options_its_command_uses() {
    let cases: [(&[&str], &[&str], &[&str]); 7] = [
        (
            &["produce", "--help"],
            &["--brokers", "--topic", "--to-dir", "--config", "--quiet", "KAFKA_BOOTSTRAP_SERVERS"],
            &["--lake", "--database-url", "--date", "--models", "--create-buckets"],
        ),
        (&["source", "load", "--help"], &["--database-url", "--scale", "--from-dump"], &["--lake", "--date", "--models"]),
        (
            &["sql", "--help"],
            &["--lake", "--format", "MEDALLION_LAKE", "--no-audit", "--encrypt-at-rest"],
            &["--date", "--database-url", "--models", "--create-buckets", "--audit-flush-interval", "--lineage-url"],
        ),
        (
            &["stream", "--help"],
            &["--lake", "--create-buckets", "--brokers", "--max-batch", "--interval", "--lateness", "[stream]"],
            &["--date", "--database-url", "--models"],
        ),
        (
            &["serve", "--help"],
            &["--lake", "--addr", "--pg-addr", "--no-pg", "--sql-timeout", "MEDALLION_ADDR", "[serve]", "--audit-flush-interval", "MEDALLION_AUDIT_FLUSH_INTERVAL", "--encrypt-at-rest"],
            &["--date", "--database-url", "--models", "--create-buckets", "--lineage-url", "--lineage-file"],
        ),
        (
            &["run", "--help"],
            &[
                "--lake", "--create-buckets", "--date", "--models", "--database-url", "--from-dump", "DATABASE_URL", "--profile",
                "--encrypt-at-rest", "MEDALLION_PII_ENCRYPT_AT_REST", "--lineage-url", "MEDALLION_LINEAGE_URL", "--lineage-file",
            ],
            &["--brokers", "--addr", "--audit-flush-interval"],
        ),
        (
            &["explain", "--help"],
            &["--lake", "--date", "--models", "--plan-only", "EXPLAIN ANALYZE"],
            &["--database-url", "--create-buckets", "--brokers", "--lineage-url"],
        ),
    ];
    for (args, present, absent) in cases {
        let text = help(args);
        for option in present {
            assert!(text.contains(option), "{args:?} should mention {option}:\n{text}");
        }
        for option in absent {
            assert!(!text.contains(option), "{args:?} should not mention {option}:\n{text}");
        }
    }
}

#[test]
fn a_bad_setting_is_one_line_naming_it_and_the_form_expected() {
    let output = medallion(&["stream", "--interval", "soon", "--source", "/nowhere", "--quiet"], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("--interval") && text.contains("'soon'") && text.contains("500ms"), "{text}");

    let output = medallion(&["serve", "--quiet"], &[("MEDALLION_ADDR", "everywhere")]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("MEDALLION_ADDR") && text.contains("127.0.0.1:8080"), "{text}");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[serve]\nsql_timeout = \"forever\"\n").unwrap();
    let output = medallion(&["serve", "--config", file.path().to_str().unwrap(), "--quiet"], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("serve.sql_timeout") && text.contains("'forever'") && text.contains("30s"), "{text}");

    std::fs::write(file.path(), "[stream]\nmax_batches = 10\n").unwrap();
    let output = medallion(&["stream", "--config", file.path().to_str().unwrap(), "--quiet"], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("max_batches") && text.contains("unknown field"), "{text}");
}

#[test]
fn the_audit_encryption_and_lineage_flags_reach_the_configuration() {
    // Each flag is read through the one precedence: a bad value fails in one
    // line that names the flag, over an environment that says otherwise.
    let output = medallion(&["serve", "--audit-flush-interval", "0s", "--quiet"], &[("MEDALLION_AUDIT_FLUSH_INTERVAL", "2s")]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("--audit-flush-interval") && text.contains("'0s'") && text.contains("above zero"), "{text}");

    let without_key = [("MEDALLION_PII_KEY", ""), ("MEDALLION_PII_ENCRYPT_AT_REST", "false")];
    let output = medallion(&["ingest", "--encrypt-at-rest", "--quiet"], &without_key);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("encrypt_at_rest is on") && text.contains("MEDALLION_PII_KEY"), "{text}");

    // The lineage targets are opened before a stage writes anything; the
    // URL never shows, not even when it is refused.
    let lake = TestLake::new();
    let url = lake.url();
    let missing_folder = lake.dir.path().join("no-such-folder").join("events.jsonl");
    let file_flag = ["refine", "--lake", url.as_str(), "--lineage-file", missing_folder.to_str().unwrap(), "--quiet"];
    let text = assert_one_line_failure(&medallion(&file_flag, &[("MEDALLION_LINEAGE_FILE", ""), ("MEDALLION_LINEAGE_URL", "")]));
    assert!(text.contains("lineage.file") && text.contains("no-such-folder"), "{text}");
    let url_flag = ["aggregate", "--lake", url.as_str(), "--lineage-url", "ftp://lineage-Secret.example/x", "--quiet"];
    let text = assert_one_line_failure(&medallion(&url_flag, &[("MEDALLION_LINEAGE_URL", "http://from-env.example/x")]));
    assert!(text.contains("lineage.url is not an http(s) URL") && !text.contains("lineage-Secret"), "{text}");
    assert!(lake_is_empty(&lake), "nothing was written");
}

/// Batches and messages (events + rejects) of the one stream run recorded in the lake.
async fn recorded_stream_run(lake: &TestLake) -> (i64, i64) {
    let config = config(&lake.url(), None, "2026-11-25");
    let runs = rows(&lake_query(&config, "SELECT details, \"rows\" + quarantined FROM gold.pipeline_runs WHERE command = 'stream'").await);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let details: serde_json::Value = serde_json::from_str(&runs[0][0].text()).unwrap();
    (details["batches"].as_i64().unwrap(), runs[0][1].i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_settings_come_from_medallion_toml_and_a_flag_overrides_them() {
    // Twelve events, one per file: the file source reads whole files and
    // counts its positions in files, so with one event per file a batch
    // holds max_batch events (the last one the rest).
    let staging = tempfile::tempdir().unwrap();
    let output = medallion(&["produce", "--to-dir", staging.path().to_str().unwrap(), "--count", "12", "--quiet"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let produced = std::fs::read_dir(staging.path()).unwrap().next().unwrap().unwrap().path();
    let events = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(produced).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 12);
    for (i, line) in lines.iter().enumerate() {
        std::fs::write(events.path().join(format!("{i:02}.jsonl")), format!("{line}\n")).unwrap();
    }

    // The source and the batch size come from the file: 12 events by 2.
    let settings = tempfile::tempdir().unwrap();
    let config_file = settings.path().join("medallion.toml");
    let toml = format!("[stream]\nsource = \"file://{}\"\nmax_batch = 2\n", events.path().display());
    std::fs::write(&config_file, toml).unwrap();
    let config_path = config_file.to_str().unwrap();
    let lake = TestLake::new();
    let output = medallion(&["stream", "--config", config_path, "--lake", &lake.url(), "--quiet"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(recorded_stream_run(&lake).await, (6, 12));

    // The flag beats the file: 12 events by 5 is 5, 5 and 2.
    let lake = TestLake::new();
    let output = medallion(&["stream", "--config", config_path, "--lake", &lake.url(), "--max-batch", "5", "--quiet"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(recorded_stream_run(&lake).await, (3, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_time_travel_restore_optimize_and_status_from_the_command_line() {
    let db = northwind_database("it_cli_lake_commands").await;
    let lake = TestLake::new();
    let url = lake.url();
    // Two dates, two runs: the version of gold.kpi_revenue after the first
    // is read through the library, not through the commands under test.
    run_pipeline(&config(&url, Some(&db), "2026-11-24")).await.unwrap();
    let first = Lake::new(&config(&url, None, "2026-11-24")).unwrap();
    let first_version = first.existing_table("gold", "kpi_revenue").await.unwrap().unwrap().version().unwrap();
    run_pipeline(&config(&url, Some(&db), "2026-11-25")).await.unwrap();
    let count = |as_of: Option<&str>| {
        let mut args = vec!["sql", "--lake", &url, "--format", "csv", "SELECT count(*) AS n FROM gold.kpi_revenue"];
        if let Some(as_of) = as_of {
            args.extend(["--as-of", as_of]);
        }
        let output = medallion(&args, &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).lines().last().unwrap().trim().to_string()
    };
    assert_eq!(count(None), "2", "one row per date");
    let first_text = first_version.to_string();
    assert_eq!(count(Some(&first_text)), "1", "as of the first run: its date only");

    // A version names one table's state: a query over two tables is refused in one line.
    let output = medallion(
        &["sql", "--lake", &url, "--as-of", &first_text, "SELECT * FROM gold.kpi_revenue, gold.rfm_segments"],
        &[],
    );
    let text = assert_one_line_failure(&output);
    assert!(text.contains("give a time instead"), "{text}");

    let output = medallion(&["history", "gold.kpi_revenue", "--lake", &url], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let commits_before = stdout(&output).lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count();
    assert!(commits_before >= 2, "{}", stdout(&output));

    // Restore: the first run's content, as one more commit.
    let output = medallion(&["restore", "gold.kpi_revenue", "--to", &first_text, "--lake", &url], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(count(None), "1");
    let output = medallion(&["history", "gold.kpi_revenue", "--lake", &url], &[]);
    let commits_after = stdout(&output).lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count();
    assert_eq!(commits_after, commits_before + 1, "{}", stdout(&output));

    // Optimize and vacuum every table: content unchanged, summaries printed.
    let revenue = |c: &medallion::config::Config| {
        let c = c.clone();
        async move { rows(&lake_query(&c, "SELECT SUM(total_revenue) FROM gold.kpi_revenue").await)[0][0].f64() }
    };
    let settings = config(&url, None, "2026-11-25");
    let before = revenue(&settings).await;
    let output = medallion(&["optimize", "--lake", &url], &[]);
    assert!(output.status.success() && stdout(&output).contains("optimized in"), "{}", stderr(&output));
    let output = medallion(&["vacuum", "--dry-run", "--lake", &url], &[]);
    assert!(output.status.success() && stdout(&output).contains("vacuum would delete"), "{}", stderr(&output));
    assert_close(revenue(&settings).await, before, "revenue after optimize");

    let output = medallion(&["status", "--lake", &url, "--runs", "3"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.lines().any(|l| l.starts_with("gold.kpi_revenue ")), "{text}");
    assert!(text.contains("latest runs") && text.contains("by hand"), "{text}");

    // Read through a pipe its reader closed (`medallion status | head -0`):
    // the command ends quietly, killed by SIGPIPE as other Unix tools are,
    // without a panic (it panicked before: "failed printing to stdout").
    for args in [vec!["status", "--lake", &url], vec!["sql", "--lake", &url, "SELECT * FROM gold.rfm_customers"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_medallion"))
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?} {}", output.status, stderr(&output));
        assert!(stderr(&output).is_empty(), "{args:?}: {}", stderr(&output));
    }

    let output = medallion(&["history", "gold.no_such_table", "--lake", &url], &[]);
    assert_one_line_failure(&output);
}

/// `explain` shows the plan a model runs (with each operator's rows when it
/// runs it), and `--profile` where each table's time went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_profile_show_where_a_models_time_goes() {
    let db = northwind_database("it_cli_explain").await;
    let lake = TestLake::new();
    let url = lake.url();
    run_pipeline(&config(&url, Some(&db), "2026-11-25")).await.unwrap();
    let lines = pg_rows(&db, "SELECT COUNT(*)::int8 FROM order_details").await[0][0].i64();

    let output = medallion(&["explain", "silver.sales_master", "--lake", &url, "--date", "2026-11-25"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    // One row per order line, as PostgreSQL counts them, and the plan with its metrics.
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("silver.sales_master for 2026-11-25: {lines} rows in ")), "{text}");
    assert!(text.contains("HashJoinExec") && text.contains("output_rows="), "{text}");

    let output = medallion(&["explain", "gold.kpi_revenue", "--plan-only", "--lake", &url, "--date", "2026-11-25"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("AggregateExec") && !text.contains("output_rows="), "{text}");

    let output = medallion(&["explain", "gold.nope", "--lake", &url], &[]);
    let text = assert_one_line_failure(&output);
    assert!(text.contains("no model builds gold.nope") && text.contains("silver.sales_master"), "{text}");

    let output = medallion(&["refine", "--profile", "--lake", &url, "--date", "2026-11-25"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let profile = text.lines().find(|l| l.contains("silver.sales_master") && l.contains("wall ")).unwrap_or_else(|| panic!("{text}"));
    for part in ["plan ", "scan ", "join ", "encode ", "commit ", "rows/s"] {
        assert!(profile.contains(part), "{part} in {profile}");
    }
}
