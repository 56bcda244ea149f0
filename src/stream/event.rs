//! The sales event contract and its validation.
//!
//! ```json
//! {"event_id": "7f1c…", "timestamp": "2026-11-25T10:15:02.123Z", "pays": "France",
//!  "client_id": "ALFKI", "produit": "Chai", "categorie": "Beverages",
//!  "quantite": 3, "prix_unitaire": 18.0, "montant": 54.0}
//! ```
//! Required: `event_id` (non-empty string), `timestamp` (RFC 3339), `pays`
//! (non-empty string), `montant` (number ≥ 0). The others are optional but,
//! when present, must have their type. Unknown extra fields are tolerated.
//! Country is standardised with the same map as silver.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::flat_json::{self, Scalar};
use crate::config::normalise_key;

/// A valid sales event. Its strings borrow from the message payload (and
/// the country map) where they can: decoding allocates nothing per event in
/// the common case.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub event_time: DateTime<Utc>,
    /// Standardised country.
    pub pays: Cow<'a, str>,
    pub client_id: Option<Cow<'a, str>>,
    pub produit: Option<Cow<'a, str>>,
    pub categorie: Option<Cow<'a, str>>,
    pub quantite: Option<i64>,
    pub prix_unitaire: Option<f64>,
    pub montant: f64,
}

/// The contract as a typed record: the fast path, borrowing from the payload.
#[derive(serde::Deserialize)]
struct Typed<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pays: Cow<'a, str>,
    montant: f64,
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    produit: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    categorie: Option<Cow<'a, str>>,
    #[serde(default)]
    quantite: Option<i64>,
    #[serde(default)]
    prix_unitaire: Option<f64>,
}

/// Parses and validates one message; the error is the reject reason.
///
/// Valid events in their usual shape (a flat object, no escapes) take the
/// scanner of `flat_json`; the others a typed `serde_json` path; anything
/// both refuse is parsed again generically to say precisely what is wrong.
/// All three agree on every event they accept (see the tests).
pub fn parse<'a>(payload: &'a [u8], countries: &'a BTreeMap<String, String>) -> Result<SalesEvent<'a>, String> {
    if let Some(event) = parse_flat(payload, countries) {
        return Ok(event);
    }
    parse_typed(payload, countries)
}

/// The known members of a flat event, as scanned.
#[derive(Default)]
struct FlatMembers<'a> {
    event_id: Option<Scalar<'a>>,
    timestamp: Option<Scalar<'a>>,
    pays: Option<Scalar<'a>>,
    montant: Option<Scalar<'a>>,
    client_id: Option<Scalar<'a>>,
    produit: Option<Scalar<'a>>,
    categorie: Option<Scalar<'a>>,
    quantite: Option<Scalar<'a>>,
    prix_unitaire: Option<Scalar<'a>>,
}

/// The fast path: a valid event in the usual shape, or `None` to let the
/// other paths decide (and explain).
fn parse_flat<'a>(payload: &'a [u8], countries: &'a BTreeMap<String, String>) -> Option<SalesEvent<'a>> {
    let mut members = FlatMembers::default();
    flat_json::scan_object(payload, |key, value| {
        let slot = match key {
            "event_id" => &mut members.event_id,
            "timestamp" => &mut members.timestamp,
            "pays" => &mut members.pays,
            "montant" => &mut members.montant,
            "client_id" => &mut members.client_id,
            "produit" => &mut members.produit,
            "categorie" => &mut members.categorie,
            "quantite" => &mut members.quantite,
            "prix_unitaire" => &mut members.prix_unitaire,
            _ => return true, // unknown members are tolerated
        };
        // A repeated member: the full parser decides.
        slot.replace(value).is_none()
    })?;
    let required_text = |value: Option<Scalar<'a>>| match value {
        Some(Scalar::Str(text)) if !text.trim().is_empty() => Some(text),
        _ => None,
    };
    let optional_text = |value: Option<Scalar<'a>>| match value {
        None | Some(Scalar::Null) => Some(None),
        Some(Scalar::Str(text)) => Some(Some(Cow::Borrowed(text))),
        _ => None,
    };
    let montant = members.montant.as_ref().and_then(Scalar::as_f64).filter(|m| *m >= 0.0)?;
    let timestamp = required_text(members.timestamp)?;
    Some(SalesEvent {
        event_id: Cow::Borrowed(required_text(members.event_id)?),
        event_time: parse_utc_timestamp(timestamp).or_else(|| Some(DateTime::parse_from_rfc3339(timestamp).ok()?.with_timezone(&Utc)))?,
        pays: standardise(required_text(members.pays)?, countries),
        client_id: optional_text(members.client_id)?,
        produit: optional_text(members.produit)?,
        categorie: optional_text(members.categorie)?,
        quantite: optional(members.quantite, Scalar::as_i64)?,
        prix_unitaire: optional(members.prix_unitaire, Scalar::as_f64)?,
        montant,
    })
}

/// An optional member read with `read`: `Some(None)` when absent or null,
/// `None` when present with another type.
fn optional<'a, T>(value: Option<Scalar<'a>>, read: impl Fn(&Scalar<'a>) -> Option<T>) -> Option<Option<T>> {
    match value {
        None | Some(Scalar::Null) => Some(None),
        Some(scalar) => read(&scalar).map(Some),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form producers usually write,
/// read without the generality of chrono's RFC 3339 parser. `None` for
/// any other form (offsets, lower-case letters, leap seconds), which
/// chrono then reads.
fn parse_utc_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |value, digit| digit.is_ascii_digit().then(|| value * 10 + u32::from(digit - b'0')))
    };
    let nanos = match &bytes[19..] {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            number(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let second = number(&bytes[17..19])?;
    if second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(number(&bytes[0..4])? as i32, number(&bytes[5..7])?, number(&bytes[8..10])?)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(number(&bytes[11..13])?, number(&bytes[14..16])?, second, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// The typed `serde_json` path, for valid events the scanner does not
/// handle (escapes, nested extra members); then the generic one.
fn parse_typed<'a>(payload: &'a [u8], countries: &'a BTreeMap<String, String>) -> Result<SalesEvent<'a>, String> {
    if let Ok(typed) = serde_json::from_slice::<Typed>(payload) {
        if !typed.event_id.trim().is_empty() && !typed.pays.trim().is_empty() && typed.montant.is_finite() && typed.montant >= 0.0 {
            if let Ok(time) = DateTime::parse_from_rfc3339(&typed.timestamp) {
                return Ok(SalesEvent {
                    pays: standardise(&typed.pays, countries),
                    event_id: typed.event_id,
                    event_time: time.with_timezone(&Utc),
                    client_id: typed.client_id,
                    produit: typed.produit,
                    categorie: typed.categorie,
                    quantite: typed.quantite,
                    prix_unitaire: typed.prix_unitaire,
                    montant: typed.montant,
                });
            }
        }
    }
    parse_generic(payload, countries)
}

fn standardise<'a>(raw: &str, countries: &'a BTreeMap<String, String>) -> Cow<'a, str> {
    // The key of `normalise_key`; short ASCII names (all of them, in
    // practice) are lower-cased on the stack, without an allocation.
    let trimmed = raw.trim();
    let mut buffer = [0u8; 64];
    let normalised;
    let key = if trimmed.is_ascii() && trimmed.len() <= buffer.len() {
        let key = &mut buffer[..trimmed.len()];
        key.copy_from_slice(trimmed.as_bytes());
        key.make_ascii_lowercase();
        std::str::from_utf8(key).expect("ASCII stays UTF-8")
    } else {
        normalised = normalise_key(raw);
        normalised.as_str()
    };
    match countries.get(key) {
        Some(canonical) => Cow::Borrowed(canonical.as_str()),
        None => Cow::Owned(trimmed.to_string()),
    }
}

/// The generic path: every check, with a precise reason.
fn parse_generic<'a>(payload: &[u8], countries: &'a BTreeMap<String, String>) -> Result<SalesEvent<'a>, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object".into());
    };
    let event_id = required_string(&object, "event_id")?;
    let timestamp = required_string(&object, "timestamp")?;
    let event_time = DateTime::parse_from_rfc3339(&timestamp)
        .map_err(|_| format!("timestamp '{timestamp}' is not RFC 3339"))?
        .with_timezone(&Utc);
    let raw_country = required_string(&object, "pays")?;
    let pays = standardise(&raw_country, countries);
    let montant = match object.get("montant") {
        None | Some(Value::Null) => return Err("missing field montant".into()),
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()).ok_or("montant is not a finite number")?,
        Some(_) => return Err("montant must be a number".into()),
    };
    if montant < 0.0 {
        return Err(format!("montant {montant} is negative"));
    }
    Ok(SalesEvent {
        event_id: event_id.into(),
        event_time,
        pays,
        client_id: optional_string(&object, "client_id")?.map(Cow::Owned),
        produit: optional_string(&object, "produit")?.map(Cow::Owned),
        categorie: optional_string(&object, "categorie")?.map(Cow::Owned),
        quantite: match object.get("quantite") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or("quantite must be an integer")?),
            Some(_) => return Err("quantite must be an integer".into()),
        },
        prix_unitaire: match object.get("prix_unitaire") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => return Err("prix_unitaire must be a number".into()),
        },
        montant,
    })
}

fn required_string(object: &Map<String, Value>, field: &str) -> Result<String, String> {
    match object.get(field) {
        None | Some(Value::Null) => Err(format!("missing field {field}")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{field} is empty")),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CountryConfig;

    fn countries() -> BTreeMap<String, String> {
        CountryConfig::default().lookup()
    }

    #[test]
    fn the_contract_example_is_valid() {
        let countries = countries();
        let event = parse(
            br#"{"event_id": "7f1c", "timestamp": "2026-11-25T10:15:02.123Z", "pays": "france",
                "client_id": "ALFKI", "produit": "Chai", "categorie": "Beverages",
                "quantite": 3, "prix_unitaire": 18.0, "montant": 54.0, "extra": [1]}"#,
            &countries,
        )
        .unwrap();
        assert_eq!(event.pays, "France");
        assert_eq!(event.quantite, Some(3));
        assert_eq!(event.montant, 54.0);
        assert_eq!(event.event_time.timestamp_millis(), 1_795_601_702_123); // python: datetime(2026,11,25,10,15,2,123000,utc)
    }

    #[test]
    fn fast_and_generic_paths_agree() {
        let c = countries();
        let payload = br#"{"event_id":"e1","timestamp":"2026-11-25T10:00:00+01:00","pays":" u.k. ","montant":3,"quantite":null}"#;
        let fast = parse(payload, &c).unwrap();
        assert_eq!(fast, parse_generic(payload, &c).unwrap());
        assert_eq!(fast.pays, "UK");
        // Typed fast path refuses a float quantity; the generic one says why.
        let float_quantity = br#"{"event_id":"e","timestamp":"2026-11-25T10:00:00Z","pays":"UK","montant":1,"quantite":2.5}"#;
        assert_eq!(parse(float_quantity, &c).unwrap_err(), "quantite must be an integer");
        assert_eq!(parse(br#"{"event_id":" ","timestamp":"2026-11-25T10:00:00Z","pays":"UK","montant":1}"#, &c).unwrap_err(), "event_id is empty");
    }

    /// Equal events, floats to the last bits (`serde_json`'s default float
    /// parser may be one unit in the last place off; ours is exact).
    fn assert_same(ours: &SalesEvent, serde: &SalesEvent) {
        let close = |a: f64, b: f64| (a - b).abs() <= b.abs() * 4.0 * f64::EPSILON;
        assert!(close(ours.montant, serde.montant), "{ours:?} vs {serde:?}");
        match (ours.prix_unitaire, serde.prix_unitaire) {
            (Some(a), Some(b)) => assert!(close(a, b), "{ours:?} vs {serde:?}"),
            (a, b) => assert_eq!(a, b),
        }
        fn exact<'a>(e: &SalesEvent<'a>) -> SalesEvent<'a> {
            SalesEvent { montant: 0.0, prix_unitaire: None, ..e.clone() }
        }
        assert_eq!(exact(ours), exact(serde));
    }

    #[test]
    fn the_flat_scanner_accepts_generated_events_exactly_as_serde_reads_them() {
        let c = countries();
        let mut generator = crate::produce::EventGenerator::new(0.2, 7).unwrap();
        let mut fast = 0;
        let mut valid_payloads = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let generated = generator.next_event();
            if let Some(event) = parse_flat(&generated.payload, &c) {
                assert_same(&event, &parse_typed(&generated.payload, &c).unwrap());
                fast += 1;
            }
            // A bad event that parses must be a replay (a duplicate id).
            let parses = parse(&generated.payload, &c).is_ok();
            assert!(parses == generated.valid || (parses && valid_payloads.contains(&generated.payload)));
            if generated.valid {
                valid_payloads.insert(generated.payload);
            }
        }
        // Bad events include replays of valid payloads (duplicate ids).
        assert!(fast > 1_600, "only {fast} events took the fast path");
    }

    #[test]
    fn the_flat_scanner_agrees_with_serde_on_unusual_events() {
        let c = countries();
        let base = r#""event_id":"e1","timestamp":"2026-11-25T10:15:02.5Z","pays":"France","montant":54"#;
        let variants = [
            format!("{{{base}}}"),
            format!(" {{ {} }} \n", base.replace("\":", "\" : ").replace(",\"", " ,\t\"")),
            format!(r#"{{{base},"extra":1,"flag":true,"note":null}}"#),
            format!(r#"{{{base},"extra":[1,{{"a":2}}]}}"#),
            format!(r#"{{{base},"client_id":null,"produit":"Chef Anton\u0027s","categorie":"Seafood","quantite":-0,"prix_unitaire":1e1}}"#),
            format!(r#"{{{base},"quantite":3.0}}"#),
            format!(r#"{{{base},"quantite":12345678901234567890}}"#),
            format!(r#"{{{base},"prix_unitaire":"18"}}"#),
            format!(r#"{{{base},"client_id":7}}"#),
            format!(r#"{{{base},"montant":55}}"#),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"  u.s.a.  ","montant":0}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"Österreich","montant":1.25}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"FRANCE","montant":-0.0}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"France","montant":-1}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"France","montant":"1"}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"France","montant":null}"#.to_string(),
            r#"{"event_id":"","timestamp":"2026-11-25T10:15:02Z","pays":"France","montant":1}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":" ","montant":1}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25 10:15:02+01:00","pays":"France","montant":1}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02","pays":"France","montant":1}"#.to_string(),
            r#"{"event_id":"e1","pays":"France","montant":1}"#.to_string(),
            r#"{"event_id":"e1","timestamp":"2026-11-25T10:15:02Z","pays":"France","montant":1e999}"#.to_string(),
        ];
        for payload in &variants {
            let payload = payload.as_bytes();
            let typed = parse_typed(payload, &c);
            match (parse_flat(payload, &c), &typed) {
                (Some(event), Ok(expected)) => assert_same(&event, expected),
                (Some(_), Err(reason)) => panic!("fast path accepts what serde refuses ({reason})"),
                (None, _) => assert_eq!(parse(payload, &c), typed),
            }
        }
        // The usual shapes do take the fast path.
        for payload in &variants[..3] {
            assert!(parse_flat(payload.as_bytes(), &c).is_some(), "{payload}");
        }
    }

    #[test]
    fn utc_timestamps_read_as_chrono_reads_them() {
        for text in [
            "2026-11-25T10:15:02Z", "2026-11-25T10:15:02.1Z", "2026-11-25T10:15:02.123Z", "2026-11-25T10:15:02.123456789Z",
            "2024-02-29T23:59:59.000001Z", "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
            assert_eq!(parse_utc_timestamp(text), Some(chrono), "{text}");
        }
        // Other forms are left to chrono (which may accept or refuse them).
        for text in [
            "2026-11-25T10:15:02+01:00", "2026-11-25t10:15:02z", "2026-11-25 10:15:02Z", "2026-11-25T10:15:02.1234567891Z",
            "2026-12-31T23:59:60Z", "2026-02-30T10:15:02Z", "2026-11-25T24:00:00Z", "2026-11-25T10:15:02.Z", "2026-11-25T1:15:02Z",
            "2026-11-25T10:15:02", "20261125T101502Z",
        ] {
            assert_eq!(parse_utc_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn bad_events_say_why() {
        let c = countries();
        let reason = |payload: &str| parse(payload.as_bytes(), &c).unwrap_err();
        assert!(reason("{not json").starts_with("malformed JSON"));
        assert_eq!(reason("[1]"), "not a JSON object");
        assert_eq!(reason(r#"{"timestamp":"2026-11-25T10:00:00Z","pays":"UK","montant":1}"#), "missing field event_id");
        assert_eq!(reason(r#"{"event_id":"a","timestamp":"yesterday","pays":"UK","montant":1}"#), "timestamp 'yesterday' is not RFC 3339");
        assert_eq!(reason(r#"{"event_id":"a","timestamp":"2026-11-25T10:00:00Z","pays":"UK","montant":"1"}"#), "montant must be a number");
        assert_eq!(reason(r#"{"event_id":"a","timestamp":"2026-11-25T10:00:00Z","pays":"UK","montant":-2}"#), "montant -2 is negative");
        assert_eq!(reason(r#"{"event_id":"a","timestamp":"2026-11-25T10:00:00Z","pays":"UK","montant":2,"quantite":"x"}"#), "quantite must be an integer");
    }
}
