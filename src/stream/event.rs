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
/// Well-formed events take a typed fast path; anything it refuses is parsed
/// again generically to say precisely what is wrong.
pub fn parse<'a>(payload: &'a [u8], countries: &'a BTreeMap<String, String>) -> Result<SalesEvent<'a>, String> {
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
    match countries.get(&normalise_key(raw)) {
        Some(canonical) => Cow::Borrowed(canonical.as_str()),
        None => Cow::Owned(raw.trim().to_string()),
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
