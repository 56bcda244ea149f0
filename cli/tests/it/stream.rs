//! The streaming path against a real Apache Kafka broker (started by
//! scripts/test.sh): every valid event in bronze once, every invalid one in
//! the rejects, live totals equal to sums computed here from what was sent,
//! and exactly-once through SIGKILLs and crashes between commits.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use medallion::lake::Lake;
use medallion::live::LiveHandle;
use medallion::progress::Progress;
use medallion::stream::files::FileSource;
use medallion::stream::kafka::KafkaSource;
use medallion::stream::source::StreamSource;
use medallion::stream::{self, StreamOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::*;

pub(crate) fn brokers() -> String {
    std::env::var("MEDALLION_TEST_KAFKA").expect(
        "MEDALLION_TEST_KAFKA is not set: run the tests with scripts/test.sh, which starts Apache Kafka",
    )
}

pub(crate) async fn create_topic(name: &str, partitions: i32) {
    create_topic_on(&brokers(), name, partitions).await
}

async fn create_topic_on(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let _ = admin.delete_topics(&[name], &AdminOptions::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let results = admin
        .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("Kafka admin reachable");
    for result in results {
        result.unwrap_or_else(|(topic, e)| panic!("creating {topic}: {e}"));
    }
}

/// One message the test sends, and what the stream must make of it.
pub(crate) struct Sent {
    pub(crate) key: String,
    pub(crate) payload: String,
    /// Some((country as standardised, amount)) when the event is valid and new.
    pub(crate) counts_as: Option<(String, f64)>,
}

/// `n` messages: every 20th is invalid in one of five ways, every 50th
/// repeats the id of a valid event sent two messages before. Countries use aliases the stream must fold.
pub(crate) fn messages(n: usize, tag: &str) -> Vec<Sent> {
    let countries = [("France", "France"), ("germany ", "Germany"), ("U.S.A.", "USA"), ("UK", "UK"), ("Brasil", "Brazil")];
    let mut out = Vec::new();
    for i in 0..n {
        let (raw, standard) = countries[i % countries.len()];
        let amount = ((i * 37) % 1000) as f64 / 4.0;
        let id = format!("{tag}-{i}");
        let good = format!(
            r#"{{"event_id":"{id}","timestamp":"2026-11-25T10:{:02}:{:02}.000Z","pays":"{raw}","client_id":"C{}","montant":{amount},"quantite":2,"extra":true}}"#,
            (i / 60) % 60,
            i % 60,
            i % 7
        );
        let (payload, counts_as) = if i % 20 == 0 {
            let bad = match (i / 20) % 5 {
                0 => format!("{{\"event_id\":\"{id}\",\"pays\":"),
                1 => good.replace(&format!(",\"montant\":{amount}"), ""),
                2 => good.replace(&format!("\"montant\":{amount}"), &format!("\"montant\":\"{amount}\"")),
                3 => good.replace(&format!("\"montant\":{amount}"), "\"montant\":-1.5"),
                _ => good.replace("\"timestamp\":\"2026", "\"timestamp\":\"yesterday 2026"),
            };
            (bad, None)
        } else if i % 50 == 1 && i > 50 {
            // A producer retry: the event sent two messages before, again,
            // with its key (so in its partition, after it).
            let earlier: &Sent = &out[i - 2];
            out.push(Sent { key: earlier.key.clone(), payload: earlier.payload.clone(), counts_as: None });
            continue;
        } else {
            (good, Some((standard.to_string(), amount)))
        };
        out.push(Sent { key: format!("C{}", i % 7), payload, counts_as });
    }
    out
}

/// `sent` to `topic` of the test broker (its plaintext listener).
pub(crate) async fn send(topic: &str, sent: &[Sent]) {
    send_to(&brokers(), &[], topic, sent).await
}

/// `sent` to `topic` of `brokers`, with a producer set up here by hand (not
/// medallion's), given the librdkafka settings the listener needs besides
/// the address (`security.protocol`, `sasl.*`; none for plaintext); waits
/// until the broker acknowledged every message.
pub(crate) async fn send_to(brokers: &str, client_settings: &[(&str, &str)], topic: &str, sent: &[Sent]) {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (key, value) in client_settings {
        client.set(*key, *value);
    }
    let producer: FutureProducer = client.set("linger.ms", "5").create().unwrap();
    let mut pending = Vec::new();
    for message in sent {
        pending.push(producer.send_result(FutureRecord::to(topic).key(&message.key).payload(&message.payload)).unwrap());
    }
    for delivery in pending {
        delivery.await.unwrap().unwrap();
    }
}

/// Expected live totals: country → (sum, count).
pub(crate) fn expected_totals(sent: &[Sent]) -> BTreeMap<String, (f64, i64)> {
    let mut totals = BTreeMap::new();
    for (country, amount) in sent.iter().filter_map(|s| s.counts_as.clone()) {
        let entry = totals.entry(country).or_insert((0.0, 0));
        entry.0 += amount;
        entry.1 += 1;
    }
    totals
}

pub(crate) fn assert_totals(actual: &BTreeMap<String, (f64, i64)>, expected: &BTreeMap<String, (f64, i64)>) {
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (country, (sum, count)) in expected {
        let (actual_sum, actual_count) = actual[country];
        assert_eq!(actual_count, *count, "transactions of {country}");
        assert_close(actual_sum, *sum, &format!("total of {country}"));
    }
}

pub(crate) async fn lake_totals(config: &medallion::config::Config) -> BTreeMap<String, (f64, i64)> {
    rows(&lake_query(config, "SELECT pays, total_ventes_live, nb_transactions FROM gold.live_sales_by_country").await)
        .into_iter()
        .map(|r| (r[0].text(), (r[1].f64(), r[2].i64())))
        .collect()
}

pub(crate) async fn assert_exactly_once(config: &medallion::config::Config, sent: &[Sent]) {
    let valid = sent.iter().filter(|s| s.counts_as.is_some()).count() as i64;
    let events = rows(&lake_query(config,
        "SELECT COUNT(*), COUNT(DISTINCT event_id), COUNT(DISTINCT CONCAT(topic, ':', \"partition\", ':', \"offset\")) FROM bronze.sales_events").await);
    assert_eq!(events[0], vec![Cell::Int(valid), Cell::Int(valid), Cell::Int(valid)], "each valid event once");
    let rejected = rows(&lake_query(config,
        "SELECT COUNT(*), COUNT(DISTINCT CONCAT(topic, ':', \"partition\", ':', \"offset\")) FROM bronze.sales_events_rejected").await);
    let invalid = sent.len() as i64 - valid;
    assert_eq!(rejected[0], vec![Cell::Int(invalid), Cell::Int(invalid)], "each invalid message rejected once");
    assert_totals(&lake_totals(config).await, &expected_totals(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_land_exactly_once_with_rejects_and_live_totals() {
    let topic = "it-stream-10k";
    create_topic(topic, 1).await;
    let sent = messages(10_000, "a");
    send(topic, &sent).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    let live = LiveHandle::new();
    let source = StreamSource::Kafka(KafkaSource::new(&brokers(), topic, "it-10k").unwrap());
    let options = StreamOptions { max_batch: 3_000, ..StreamOptions::default() };
    let report = stream::run(&config, &Lake::new(&config).unwrap(), source, &options, &live, &Progress::hidden(),
        Arc::new(AtomicBool::new(false))).await.unwrap();
    assert!(report.batches >= 4, "several micro-batches: {}", report.batches);
    assert_exactly_once(&config, &sent).await;

    // The in-memory live table says the same.
    let in_memory: BTreeMap<String, (f64, i64)> = live.current().countries.iter()
        .map(|c| (c.pays.clone(), (c.total_ventes_live, c.nb_transactions))).collect();
    assert_totals(&in_memory, &expected_totals(&sent));
    let reasons = rows(&lake_query(&config,
        "SELECT COUNT(*) FROM bronze.sales_events_rejected WHERE reason LIKE 'duplicate event_id%'").await);
    let duplicates = (0..10_000).filter(|i| i % 50 == 1 && *i > 50 && i % 20 != 0).count() as i64;
    assert_eq!(reasons[0][0].i64(), duplicates);
    let raw = rows(&lake_query(&config,
        "SELECT payload, reason FROM bronze.sales_events_rejected WHERE \"offset\" = 0").await);
    assert_eq!(raw[0][0].text(), sent[0].payload, "the raw payload is kept");
    assert!(raw[0][1].text().starts_with("malformed JSON"), "{:?}", raw[0]);

    // Minute windows hold every on-time event.
    let windows = rows(&lake_query(&config, "SELECT SUM(nb_transactions) FROM gold.sales_by_country_minute").await);
    let late = rows(&lake_query(&config, "SELECT COUNT(*) FROM bronze.sales_events WHERE is_late").await);
    assert_eq!(windows[0][0].i64() + late[0][0].i64(), sent.iter().filter(|s| s.counts_as.is_some()).count() as i64);

    // A second run finds nothing new and changes nothing.
    let source = StreamSource::Kafka(KafkaSource::new(&brokers(), topic, "it-10k").unwrap());
    let again = stream::run(&config, &Lake::new(&config).unwrap(), source, &options, &LiveHandle::new(),
        &Progress::hidden(), Arc::new(AtomicBool::new(false))).await.unwrap();
    assert_eq!(again.events + again.rejected, 0);
    assert_exactly_once(&config, &sent).await;
}

fn stream_process(lake: &str, topic: &str, extra: &[&str], env: &[(&str, &str)]) -> Child {
    stream_process_on(&brokers(), lake, topic, extra, env)
}

/// A stream process whose error output is kept for the test's message
/// (read it with `wait_with_output`: with `--quiet` it is a line or two).
fn stream_process_heard(lake: &str, topic: &str, extra: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medallion"));
    command
        .args(["stream", "--quiet", "--lake", lake, "--topic", topic, "--brokers", &brokers(), "--max-batch", "150"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

fn stream_process_on(brokers: &str, lake: &str, topic: &str, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medallion"));
    command
        .args(["stream", "--quiet", "--lake", lake, "--topic", topic, "--brokers", brokers, "--max-batch", "150"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_crashes_between_commits_lose_nothing_and_duplicate_nothing() {
    let topic = "it-stream-crash";
    create_topic(topic, 3).await;
    let sent = messages(6_000, "c");
    send(topic, &sent).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");

    // A crash between the rejects commit and the events commit, twice.
    for _ in 0..2 {
        let status = stream_process(&lake.url(), topic, &["--available-now"], &[("MEDALLION_CRASH_POINT", "between-commits")])
            .wait()
            .unwrap();
        assert!(!status.success(), "the crash hook aborts the process");
    }
    // SIGKILL at arbitrary moments of a continuous stream, several times.
    for delay in [350u64, 700, 220, 900, 500] {
        let mut child = stream_process(&lake.url(), topic, &["--interval", "50ms"], &[]);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // Then a clean run to the end.
    let status = stream_process(&lake.url(), topic, &["--available-now"], &[]).wait().unwrap();
    assert!(status.success());
    assert_exactly_once(&config, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stream_brings_gold_live_totals_up_to_date_when_the_source_goes_quiet() {
    let topic = "it-stream-quiet";
    create_topic(topic, 1).await;
    let sent = messages(1_300, "q");
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    let mut child = stream_process(&lake.url(), topic, &["--interval", "100ms"], &[]);
    send(topic, &sent[..1_000]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(topic, &sent[1_000..]).await;

    // The gold table must catch up while the stream still runs (not only at
    // its stop), although no message follows the last batch.
    let expected = expected_totals(&sent);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = if catalog_has_live_table(&config).await { lake_totals(&config).await } else { BTreeMap::new() };
        if current.values().map(|(_, n)| n).sum::<i64>() == expected.values().map(|(_, n)| n).sum::<i64>() {
            assert_totals(&current, &expected);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gold.live_sales_by_country still behind after 20 s: {current:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "the stream is still running");
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn catalog_has_live_table(config: &medallion::config::Config) -> bool {
    Lake::new(config).unwrap().table("gold", "live_sales_by_country").await.is_ok_and(|t| t.version().is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_files_is_consumed_once_per_file() {
    let folder = tempfile::tempdir().unwrap();
    let first = messages(500, "f1");
    let second = messages(300, "f2");
    let write = |name: &str, sent: &[Sent]| {
        let text: String = sent.iter().map(|s| format!("{}\n", s.payload)).collect();
        std::fs::write(folder.path().join(name), text).unwrap();
    };
    write("0001.jsonl", &first);
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    let run = || async {
        let source = StreamSource::Files(FileSource::new(folder.path().to_path_buf()).unwrap());
        stream::run(&config, &Lake::new(&config).unwrap(), source, &StreamOptions::default(), &LiveHandle::new(),
            &Progress::hidden(), Arc::new(AtomicBool::new(false))).await.unwrap()
    };
    run().await;
    assert_exactly_once(&config, &first).await;
    write("0002.jsonl", &second);
    run().await;
    run().await;
    let all: Vec<Sent> = first.into_iter().chain(second).collect();
    assert_exactly_once(&config, &all).await;
}

/// A broker of the test's own (other ports, other state), so stopping it
/// disturbs no other test. Stopped when dropped.
struct OwnBroker {
    state: tempfile::TempDir,
    port: u16,
    sasl_port: u16,
    controller_port: u16,
}

impl OwnBroker {
    fn new() -> OwnBroker {
        OwnBroker {
            state: tempfile::tempdir().unwrap(),
            port: unused_service_port(),
            sasl_port: unused_service_port(),
            controller_port: unused_service_port(),
        }
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `scripts/kafka.sh <command>` for this broker; a start is tried
    /// twice (a JVM start on a loaded 2-core machine can miss its deadline).
    fn kafka_sh(&self, command: &str) {
        let libs = std::env::var("MEDALLION_TEST_KAFKA_LIBS")
            .expect("MEDALLION_TEST_KAFKA_LIBS is not set: run the tests with scripts/test.sh");
        let attempts = if command == "start" { 2 } else { 1 };
        let mut last_error = String::new();
        for _ in 0..attempts {
            let output = Command::new(repo_path("scripts/kafka.sh"))
                .arg(command)
                .env("MEDALLION_SERVICES_DIR", self.state.path())
                .env("KAFKA_PORT", self.port.to_string())
                .env("KAFKA_SASL_PORT", self.sasl_port.to_string())
                .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
                .env("KAFKA_LIBS", &libs)
                .output()
                .unwrap();
            if output.status.success() {
                return;
            }
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        panic!("kafka.sh {command} failed: {last_error}");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kafka_sh("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_during_consumption_loses_nothing() {
    let broker = OwnBroker::new();
    let brokers = broker.brokers();
    broker.kafka_sh("start");
    let topic = "it-stream-restart";
    create_topic_on(&brokers, topic, 3).await;
    let sent = messages(8_000, "r");
    send_to(&brokers, &[], topic, &sent[..4_000]).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");

    let mut child = stream_process_on(&brokers, &lake.url(), topic, &["--interval", "100ms"], &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.kafka_sh("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.kafka_sh("start");
    send_to(&brokers, &[], topic, &sent[4_000..]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none(), "the stream survived the broker restart");
    child.kill().unwrap();
    child.wait().unwrap();

    let status = stream_process_on(&brokers, &lake.url(), topic, &["--available-now"], &[]).wait().unwrap();
    assert!(status.success());
    assert_exactly_once(&config, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_stream_runs_exactly_once_on_the_s3_lake() {
    let s3 = S3Endpoint::shared();
    let folder = tempfile::tempdir().unwrap();
    let sent = messages(2_000, "s3");
    let text: String = sent.iter().map(|s| format!("{}\n", s.payload)).collect();
    std::fs::write(folder.path().join("0001.jsonl"), text).unwrap();
    let lake_url = format!("s3://bronze/{}/lake", unique_name("stream"));
    let config = s3_config(&s3, &lake_url, None, "2026-11-25");
    for _ in 0..2 {
        let source = StreamSource::Files(FileSource::new(folder.path().to_path_buf()).unwrap());
        stream::run(&config, &Lake::new(&config).unwrap(), source, &StreamOptions::default(), &LiveHandle::new(),
            &Progress::hidden(), Arc::new(AtomicBool::new(false))).await.unwrap();
    }
    assert_exactly_once(&config, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_stream_waits_for_a_topic_that_does_not_exist_yet() {
    let topic = unique_name("it-stream-late-topic");
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    let mut child = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["stream", "--lake", &lake.url(), "--topic", &topic, "--brokers", &brokers(), "--interval", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none(), "the stream waits for its topic instead of exiting");

    // The producer creates the topic (the broker allows it; consumers never create topics).
    let sent = messages(500, "late");
    send(&topic, &sent).await;
    let valid = sent.iter().filter(|s| s.counts_as.is_some()).count() as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let landed = if catalog_has_bronze_events(&config).await {
            rows(&lake_query(&config, "SELECT COUNT(*) FROM bronze.sales_events").await)[0][0].i64()
        } else {
            0
        };
        if landed == valid {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{landed} of {valid} events landed after 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("waiting for its source") && stderr.contains(&topic), "{stderr}");
    assert_exactly_once(&config, &sent).await;
}

async fn catalog_has_bronze_events(config: &medallion::config::Config) -> bool {
    let sql = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'bronze' AND table_name = 'sales_events'";
    rows(&lake_query(config, sql).await)[0][0].i64() > 0
}

/// How many events `bronze.sales_events` holds (0 before its first commit).
async fn bronze_event_count(config: &medallion::config::Config) -> i64 {
    if !catalog_has_bronze_events(config).await {
        return 0;
    }
    rows(&lake_query(config, "SELECT COUNT(*) FROM bronze.sales_events").await)[0][0].i64()
}

/// A `medallion stream` of group `it-group` on `topic`, its stderr in `log`.
fn group_stream(lake: &str, topic: &str, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["stream", "--lake", lake, "--topic", topic, "--brokers", &brokers(), "--max-batch", "150"])
        .args(["--group", "it-group", "--interval", "50ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until bronze holds `valid` events (at most `limit`), failing at
/// once with its log when one of `running` has exited.
async fn wait_for_events(config: &medallion::config::Config, valid: i64, limit: Duration, running: &mut [(&mut Child, &std::path::Path)]) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let landed = bronze_event_count(config).await;
        if landed >= valid {
            return;
        }
        for (child, log) in running.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("a stream exited ({status}) with {landed} of {valid} events in: {}", std::fs::read_to_string(log).unwrap());
            }
        }
        assert!(std::time::Instant::now() < deadline, "{landed} of {valid} events landed after {limit:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn valid_count(sent: &[Sent]) -> i64 {
    sent.iter().filter(|s| s.counts_as.is_some()).count() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_of_one_group_share_a_topic_and_the_survivor_of_a_sigkill_takes_over() {
    let topic = unique_name("it-stream-group");
    create_topic(&topic, 4).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    let logs = tempfile::tempdir().unwrap();
    let (first_log, second_log) = (logs.path().join("first.log"), logs.path().join("second.log"));

    // A alone reads all four partitions.
    let mut sent = messages(2_000, "g1");
    send(&topic, &sent).await;
    let mut first = group_stream(&lake.url(), &topic, &first_log);
    wait_for_events(&config, valid_count(&sent), Duration::from_secs(90), &mut [(&mut first, &first_log)]).await;

    // B joins: the group splits the partitions, both append to bronze.
    let mut second = group_stream(&lake.url(), &topic, &second_log);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let phase = messages(4_000, "g2");
    send(&topic, &phase).await;
    sent.extend(phase);
    tokio::time::sleep(Duration::from_millis(700)).await;

    // A is killed mid-run and not restarted; what is sent afterwards, to
    // every partition, lands only if B takes A's partitions over.
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let phase = messages(2_000, "g3");
    send(&topic, &phase).await;
    sent.extend(phase);
    wait_for_events(&config, valid_count(&sent), Duration::from_secs(90), &mut [(&mut second, &second_log)]).await;

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = second.wait().unwrap();
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&second_log).unwrap());
    assert_exactly_once(&config, &sent).await;
    let partitions = rows(&lake_query(&config, "SELECT COUNT(DISTINCT \"partition\") FROM bronze.sales_events").await);
    assert_eq!(partitions[0][0].i64(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_started_on_one_topic_without_a_group_never_duplicate_an_event() {
    let topic = unique_name("it-stream-twice");
    create_topic(&topic, 3).await;
    let sent = messages(6_000, "t");
    send(&topic, &sent).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    // Both read every partition from the start: whichever commits a
    // partition's positions second is refused by the lake (the other may
    // fail or finish); nothing is written twice.
    let first = stream_process_heard(&lake.url(), &topic, &["--available-now"]);
    let second = stream_process_heard(&lake.url(), &topic, &["--available-now"]);
    let statuses = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()]
        .map(|output| (output.status, String::from_utf8_lossy(&output.stderr).into_owned()));
    let valid = valid_count(&sent);
    let landed = bronze_event_count(&config).await;
    let distinct = rows(&lake_query(&config, "SELECT COUNT(DISTINCT event_id) FROM bronze.sales_events").await)[0][0].i64();
    assert_eq!(landed, distinct, "no event twice ({statuses:?})");
    // A clean run completes what a refused one left.
    assert!(stream_process(&lake.url(), &topic, &["--available-now"], &[]).wait().unwrap().success());
    assert_eq!(bronze_event_count(&config).await, valid);
    assert_exactly_once(&config, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_given_partitions_split_a_topic_by_hand() {
    let topic = unique_name("it-stream-split");
    create_topic(&topic, 3).await;
    let sent = messages(3_000, "p");
    send(&topic, &sent).await;
    let lake = TestLake::new();
    let config = config(&lake.url(), None, "2026-11-25");
    let even = stream_process_heard(&lake.url(), &topic, &["--available-now", "--partitions", "0,2"]);
    let odd = stream_process_heard(&lake.url(), &topic, &["--available-now", "--partitions", "1"]);
    for (name, process) in [("even", even), ("odd", odd)] {
        let output = process.wait_with_output().unwrap();
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    }
    assert_exactly_once(&config, &sent).await;

    // A partition the topic does not have: one line, nothing read.
    let output = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(["stream", "--available-now", "--lake", &lake.url(), "--topic", &topic, "--brokers", &brokers()])
        .args(["--partitions", "0,7"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("partition 7") && stderr.contains("3 partitions") && stderr.trim().lines().count() == 1, "{stderr}");
    assert_exactly_once(&config, &sent).await;
}
