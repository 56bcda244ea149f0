//! Kafka with SASL: the test broker's second listener (SASL_PLAINTEXT,
//! SCRAM-SHA-256, user `medallion`, started by scripts/kafka.sh) carries the
//! stream exactly once with the right credentials, from flags and the
//! environment as a user gives them; a wrong password ends `stream` and
//! `produce` at once with one line that holds no password.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::stream::{assert_exactly_once, create_topic, messages, send_to, Sent};
use crate::support::*;

/// The SASL listener and its user, as scripts/test.sh exports them.
struct SaslBroker {
    bootstrap: String,
    mechanism: String,
    username: String,
    password: String,
}

impl SaslBroker {
    fn from_env() -> SaslBroker {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with scripts/test.sh, which starts Kafka with its SASL listener")
            })
        };
        SaslBroker {
            bootstrap: var("MEDALLION_TEST_KAFKA_SASL"),
            mechanism: var("MEDALLION_TEST_KAFKA_SASL_MECHANISM"),
            username: var("MEDALLION_TEST_KAFKA_SASL_USERNAME"),
            password: var("MEDALLION_TEST_KAFKA_SASL_PASSWORD"),
        }
    }

    /// The flags a user gives (`--sasl-mechanism` as written in docs).
    fn flags(&self) -> Vec<String> {
        let pairs = [
            ("--brokers", self.bootstrap.as_str()),
            ("--security-protocol", "SASL_PLAINTEXT"),
            ("--sasl-mechanism", self.mechanism.as_str()),
            ("--sasl-username", self.username.as_str()),
        ];
        pairs.iter().flat_map(|(flag, value)| [flag.to_string(), value.to_string()]).collect()
    }

    /// `sent` through the SASL listener, with the test's own producer (set
    /// up by hand, not medallion's) given this user's SASL settings.
    async fn send(&self, topic: &str, sent: &[Sent]) {
        let sasl_settings = [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", self.mechanism.as_str()),
            ("sasl.username", self.username.as_str()),
            ("sasl.password", self.password.as_str()),
        ];
        send_to(&self.bootstrap, &sasl_settings, topic, sent).await
    }
}

/// Runs `medallion ARGS` with `KAFKA_SASL_PASSWORD=password` and no other
/// Kafka or lake variable from the test's environment.
fn medallion(args: &[String], password: &str) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_medallion"))
        .args(args)
        .env_remove("MEDALLION_LAKE")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("KAFKA_SECURITY_PROTOCOL")
        .env_remove("KAFKA_SASL_MECHANISM")
        .env_remove("KAFKA_SASL_USERNAME")
        .env("KAFKA_SASL_PASSWORD", password)
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn args(list: &[&str], broker: &SaslBroker) -> Vec<String> {
    list.iter().map(|s| s.to_string()).chain(broker.flags()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_through_sasl_scram_delivers_each_event_exactly_once() {
    let broker = SaslBroker::from_env();
    let topic = unique_name("it-sasl");
    create_topic(&topic, 2).await;
    let sent = messages(1_500, "sasl");
    broker.send(&topic, &sent[..1_000]).await;
    let lake = TestLake::new();
    let url = lake.url();
    let stream = |password: &str| {
        let list = ["stream", "--quiet", "--lake", url.as_str(), "--topic", topic.as_str(), "--available-now", "--max-batch", "400"];
        medallion(&args(&list, &broker), password)
    };

    let (first, _) = stream(&broker.password);
    assert!(first.status.success(), "{}", text(&first));
    broker.send(&topic, &sent[1_000..]).await;
    let (second, _) = stream(&broker.password);
    assert!(second.status.success(), "{}", text(&second));
    let (third, _) = stream(&broker.password);
    assert!(third.status.success(), "{}", text(&third));
    for output in [&first, &second, &third] {
        assert!(!text(output).contains(&broker.password), "the password shows: {}", text(output));
    }
    // Counted in the lake against what was sent: every valid event once,
    // every invalid one rejected once, live totals equal to the sums here.
    let config = config(&lake.url(), None, "2026-11-25");
    assert_exactly_once(&config, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medallion_produce_sends_through_sasl() {
    let broker = SaslBroker::from_env();
    let topic = unique_name("it-sasl-produce");
    create_topic(&topic, 1).await;
    // 300 events, none bad: 300 distinct valid events.
    let produce = ["produce", "--quiet", "--topic", topic.as_str(), "--count", "300", "--bad-ratio", "0"];
    let (produced, _) = medallion(&args(&produce, &broker), &broker.password);
    assert!(produced.status.success(), "{}", text(&produced));
    let lake = TestLake::new();
    let url = lake.url();
    let stream = ["stream", "--quiet", "--lake", url.as_str(), "--topic", topic.as_str(), "--available-now"];
    let (streamed, _) = medallion(&args(&stream, &broker), &broker.password);
    assert!(streamed.status.success(), "{}", text(&streamed));
    let config = config(&lake.url(), None, "2026-11-25");
    let counts = rows(&lake_query(&config, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM bronze.sales_events").await);
    assert_eq!(counts[0], vec![Cell::Int(300), Cell::Int(300)]);
}

/// A refused run: non-zero, one line saying authentication failed, no
/// password of either kind, and fast (librdkafka alone would retry forever).
fn assert_refused_in_one_line(output: &Output, elapsed: Duration, broker: &SaslBroker, wrong: &str) {
    let all = text(output);
    assert!(!output.status.success(), "a wrong password must fail: {all}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.contains("refused") && stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains(&broker.bootstrap) && stderr.contains("KAFKA_SASL_PASSWORD"), "{stderr}");
    assert!(!all.contains(wrong) && !all.contains(&broker.password), "a password shows: {all}");
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}: the refusal was not seen, a timeout was waited for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_one_line_without_the_password_and_fails_fast() {
    let broker = SaslBroker::from_env();
    let topic = unique_name("it-sasl-wrong");
    create_topic(&topic, 1).await;
    let wrong = format!("Wr0ng{}", broker.password);
    let lake = TestLake::new();
    let url = lake.url();

    // Consume what is there, and a continuous stream (which waits for a
    // source that does not answer, but not for one that refuses it).
    for mode in [&["--available-now"][..], &["--interval", "500ms"][..]] {
        let mut list = vec!["stream", "--lake", url.as_str(), "--topic", topic.as_str()];
        list.extend_from_slice(mode);
        let (output, elapsed) = medallion(&args(&list, &broker), &wrong);
        assert_refused_in_one_line(&output, elapsed, &broker, &wrong);
    }
    let (output, elapsed) = medallion(&args(&["produce", "--topic", topic.as_str(), "--count", "10"], &broker), &wrong);
    assert_refused_in_one_line(&output, elapsed, &broker, &wrong);
    assert!(!lake.dir.path().join("bronze").join("sales_events").exists(), "nothing was consumed");
}
