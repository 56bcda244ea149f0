//! Standard five-field cron expressions (`minute hour day-of-month month
//! day-of-week`), evaluated in a time zone: when does a schedule fire next.
//!
//! Each field takes `*`, a number, a range `a-b`, a list `a,b,c` and steps
//! (`*/15`, `8-18/2`); months and week days also take their English names
//! (`jan`, `mon-fri`). Sunday is 0 or 7. As in Vixie cron, when both the
//! day of month and the day of week are restricted, a day matching either
//! one fires. A local time skipped by a daylight-saving change does not
//! fire; a repeated one fires once.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Whether the day fields were written as `*` (then the other decides alone).
    any_day_of_month: bool,
    any_day_of_week: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why an expression was refused: one line, with the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression '{text}': {reason} (use 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\")")]
pub struct CronError {
    text: String,
    reason: String,
}

const MONTH_NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's name, accepted range and names for its values.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of the first name (`jan` = 1, `sun` = 0).
    first_named: u32,
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec { name: "minute", min: 0, max: 59, names: &[], first_named: 0 },
    FieldSpec { name: "hour", min: 0, max: 23, names: &[], first_named: 0 },
    FieldSpec { name: "day of month", min: 1, max: 31, names: &[], first_named: 0 },
    FieldSpec { name: "month", min: 1, max: 12, names: &MONTH_NAMES, first_named: 1 },
    // 7 is accepted for Sunday and folded onto 0.
    FieldSpec { name: "day of week", min: 0, max: 7, names: &DAY_NAMES, first_named: 0 },
];

impl std::str::FromStr for Cron {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Cron, CronError> {
        let error = |reason: String| CronError { text: text.to_string(), reason };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(error(format!("{} field(s) instead of 5", fields.len())));
        }
        let mut sets = [0u64; 5];
        for (index, (field, spec)) in fields.iter().zip(FIELDS.iter()).enumerate() {
            sets[index] = parse_field(field, spec).map_err(|reason| error(format!("{}: {reason}", spec.name)))?;
        }
        // Sunday written as 7 is Sunday.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] & !(1 << 7)) | 1;
        }
        Ok(Cron {
            text: fields.join(" "),
            minutes: sets[0],
            hours: sets[1],
            days_of_month: sets[2],
            months: sets[3],
            days_of_week: sets[4],
            any_day_of_month: fields[2] == "*",
            any_day_of_week: fields[4] == "*",
        })
    }
}

/// The set of values of one field, as bits.
fn parse_field(field: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("step '{step}' is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".to_string());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, spec)?, value(high, spec)?)
        } else {
            let single = value(range, spec)?;
            // `5/15` means from 5 to the end, every 15.
            (single, if part.contains('/') { spec.max } else { single })
        };
        if low > high {
            return Err(format!("range {low}-{high} runs backwards"));
        }
        let mut current = low;
        while current <= high {
            set |= 1 << current;
            current += step;
        }
    }
    Ok(set)
}

/// One value: a number in range or a name.
fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = spec.names.iter().position(|name| *name == lower) {
        return Ok(spec.first_named + index as u32);
    }
    let number: u32 = text.parse().map_err(|_| format!("'{text}' is not a value"))?;
    if number < spec.min || number > spec.max {
        return Err(format!("{number} is outside {}-{}", spec.min, spec.max));
    }
    Ok(number)
}

/// How far ahead `next_after` looks: long enough for `0 0 29 2 *` (leap
/// days) from any date, short enough to answer at once for `0 0 31 2 *`.
const SEARCH_DAYS: i64 = 366 * 8 + 2;

impl Cron {
    /// The first time strictly after `after` at which the schedule fires,
    /// in the zone `zone`; `None` when it never fires (February 30th).
    pub fn next_after<Z: TimeZone>(&self, after: DateTime<Utc>, zone: &Z) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(zone).naive_local();
        // The next whole minute after `after`, in local time.
        let start = local.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let first_day = start.date();
        for offset in 0..SEARCH_DAYS {
            let day = first_day + Duration::days(offset);
            if !self.fires_on(day) {
                continue;
            }
            let from = if offset == 0 { start.time() } else { chrono::NaiveTime::MIN };
            for hour in from.hour()..24 {
                if self.hours & (1 << hour) == 0 {
                    continue;
                }
                let first_minute = if hour == from.hour() { from.minute() } else { 0 };
                for minute in first_minute..60 {
                    if self.minutes & (1 << minute) == 0 {
                        continue;
                    }
                    let at = NaiveDateTime::new(day, chrono::NaiveTime::from_hms_opt(hour, minute, 0)?);
                    // A skipped local time (spring forward) has no instant;
                    // a repeated one (fall back) fires at its first instant.
                    if let Some(instant) = zone.from_local_datetime(&at).earliest() {
                        let instant = instant.with_timezone(&Utc);
                        if instant > after {
                            return Some(instant);
                        }
                    }
                }
            }
        }
        None
    }

    fn fires_on(&self, day: NaiveDate) -> bool {
        if self.months & (1 << day.month()) == 0 {
            return false;
        }
        let by_month_day = self.days_of_month & (1 << day.day()) != 0;
        let by_week_day = self.days_of_week & (1 << day.weekday().num_days_from_sunday()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (false, true) => by_month_day,
            (true, false) => by_week_day,
            (false, false) => by_month_day || by_week_day,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn next(expression: &str, after: &str) -> String {
        let cron: Cron = expression.parse().unwrap();
        cron.next_after(utc(after), &Utc).unwrap().to_rfc3339()
    }

    #[test]
    fn nightly_at_two() {
        assert_eq!(next("0 2 * * *", "2026-11-30T21:18:00Z"), "2026-12-01T02:00:00+00:00");
        // Strictly after: a run at 02:00 schedules the next day's.
        assert_eq!(next("0 2 * * *", "2026-12-01T02:00:00Z"), "2026-12-02T02:00:00+00:00");
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(next("* * * * *", "2026-11-30T21:18:30Z"), "2026-11-30T21:19:00+00:00");
        assert_eq!(next("*/15 * * * *", "2026-11-30T21:18:00Z"), "2026-11-30T21:30:00+00:00");
        assert_eq!(next("5/20 * * * *", "2026-11-30T21:26:00Z"), "2026-11-30T21:45:00+00:00");
        assert_eq!(next("0 8-18/4 * * *", "2026-11-30T12:01:00Z"), "2026-11-30T16:00:00+00:00");
    }

    #[test]
    fn names_lists_and_sunday_as_seven() {
        // 2026-11-30 is a Monday.
        assert_eq!(next("30 9 * * mon-fri", "2026-12-04T10:00:00Z"), "2026-12-07T09:30:00+00:00");
        assert_eq!(next("0 0 * * 7", "2026-11-30T00:00:00Z"), "2026-12-06T00:00:00+00:00");
        assert_eq!(next("0 0 1 jan,jul *", "2026-11-30T00:00:00Z"), "2027-01-01T00:00:00+00:00");
    }

    #[test]
    fn restricted_day_fields_fire_on_either() {
        // The 15th, or any Friday: Friday 2026-12-04 comes first.
        assert_eq!(next("0 12 15 * fri", "2026-11-30T00:00:00Z"), "2026-12-04T12:00:00+00:00");
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(next("0 0 29 2 *", "2026-11-30T00:00:00Z"), "2028-02-29T00:00:00+00:00");
        let never: Cron = "0 0 30 2 *".parse().unwrap();
        assert_eq!(never.next_after(utc("2026-11-30T00:00:00Z"), &Utc), None);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let paris = chrono_tz::Europe::Paris;
        let cron: Cron = "0 2 * * *".parse().unwrap();
        // Winter: 02:00 in Paris is 01:00 UTC.
        assert_eq!(cron.next_after(utc("2026-11-30T12:00:00Z"), &paris).unwrap().to_rfc3339(), "2026-12-01T01:00:00+00:00");
        // 2027-03-28: 02:00 does not exist in Paris; the next run is the 29th.
        assert_eq!(cron.next_after(utc("2027-03-27T12:00:00Z"), &paris).unwrap().to_rfc3339(), "2027-03-29T00:00:00+00:00");
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (text, needle) in [
            ("0 2 * *", "4 field(s)"),
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("* * * * funday", "day of week: 'funday'"),
            ("*/0 * * * *", "step of 0"),
            ("0 5-2 * * *", "backwards"),
        ] {
            let err = text.parse::<Cron>().unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("5 fields"), "{text}: {err}");
        }
    }
}
