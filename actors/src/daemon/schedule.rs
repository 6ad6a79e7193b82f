//! `scan.schedule`: a cron expression (5 fields, or 6 with seconds first) evaluated in
//! `scan.timezone`. Daylight saving follows Vixie cron, as croner implements it: a time
//! the clocks skip runs at the first instant after the jump (not skipped), a time that
//! happens twice runs once (not doubled).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    /// As written, for comparisons (a reload) and for showing it.
    expression: String,
}

/// Two schedules are the same when their expressions (as written) and zones are.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

/// As written, with its zone (the parsed form is thousands of bits).
impl std::fmt::Debug for Schedule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Schedule({:?} in {})", self.expression, self.zone)
    }
}

/// An IANA time zone name (`scan.timezone`).
pub fn parse_zone(timezone: &str) -> Result<Tz, String> {
    timezone
        .parse()
        .map_err(|_| format!("unknown time zone {timezone:?} (use an IANA name such as Europe/Berlin)"))
}

impl Schedule {
    /// Parse both; the error says which one is wrong.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, String> {
        Schedule::new(expression, parse_zone(timezone)?)
    }

    /// `expression` in `zone`; the error names the expression.
    pub fn new(expression: &str, zone: Tz) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|error| format!("invalid cron expression {expression:?}: {error}"))?;
        Ok(Schedule {
            cron,
            zone,
            expression: expression.to_owned(),
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Every run in [from, to), in local wall-clock time.
    fn runs(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor = from - chrono::Duration::seconds(1);
        while let Some(next) = schedule.next_after(cursor) {
            if next >= to {
                break;
            }
            out.push(next.with_timezone(&schedule.zone).format("%m-%d %H:%M %Z").to_string());
            cursor = next;
        }
        out
    }

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn a_nightly_run_in_the_skipped_hour_runs_once_right_after_the_jump() {
        // Berlin, 2026-03-29: clocks go from 02:00 CET to 03:00 CEST; 02:30 does not exist.
        let schedule = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let days = runs(&schedule, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12));
        assert_eq!(
            days,
            [
                "03-28 02:30 CET",
                "03-29 03:00 CEST",
                "03-30 02:30 CEST",
                "03-31 02:30 CEST"
            ]
        );
    }

    #[test]
    fn a_nightly_run_in_the_repeated_hour_runs_once() {
        // Berlin, 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
        let schedule = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let days = runs(&schedule, utc(2026, 10, 23, 12), utc(2026, 10, 27, 12));
        assert_eq!(
            days,
            [
                "10-24 02:30 CEST",
                "10-25 02:30 CEST",
                "10-26 02:30 CET",
                "10-27 02:30 CET"
            ]
        );
    }

    #[test]
    fn the_default_schedule_runs_once_a_day_across_both_changes() {
        let schedule = Schedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
        for (from, to) in [
            (utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)),
            (utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)),
        ] {
            assert_eq!(runs(&schedule, from, to).len(), 1, "{from}..{to}");
        }
    }

    #[test]
    fn an_hourly_run_keeps_its_count_on_both_days() {
        // 23 wall-clock hours on the spring day, 25 on the autumn day: one run per real hour.
        let schedule = Schedule::parse("0 * * * *", "Europe/Berlin").unwrap();
        let spring = runs(&schedule, utc(2026, 3, 28, 23), utc(2026, 3, 29, 22));
        assert_eq!(spring.len(), 23, "{spring:?}");
        let autumn = runs(&schedule, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23));
        assert_eq!(autumn.len(), 25, "{autumn:?}");
    }

    #[test]
    fn seconds_are_optional_and_errors_name_the_field() {
        let every_five = Schedule::parse("*/5 * * * * *", "UTC").unwrap();
        let next = every_five.next_after(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap());
        assert_eq!(next, Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 5).unwrap()));
        assert!(Schedule::parse("0 3 * *", "UTC").unwrap_err().contains("cron"));
        assert!(Schedule::parse("0 3 * * *", "Mars/Olympus")
            .unwrap_err()
            .contains("time zone"));
    }
}
