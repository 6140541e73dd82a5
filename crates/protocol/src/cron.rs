//! Cron triggers: parsing, tick arithmetic, catch-up after downtime, jitter and the
//! `inngest/scheduled.timer` event. Pure: no I/O and no clock; every instant is unix milliseconds
//! passed in by the caller.
//!
//! # Syntax (robfig/cron v3, as the Inngest server parses it)
//!
//! The Inngest server uses `cron.NewParser(Minute | Hour | Dom | Month | Dow | Descriptor)`, so:
//!
//! - exactly five fields `minute hour day-of-month month day-of-week` (no seconds field, no year);
//! - each field is a comma list of `*`, `?`, `N`, `N-M`, each optionally `/step`; `N/step` means
//!   `N-max/step`; month names `jan`…`dec` and weekday names `sun`…`sat` (any case); weekdays are
//!   `0`-`6` with `0` = Sunday (`7`, `L`, `W` and `#` are not robfig syntax and are rejected);
//! - day-of-month and day-of-week: if either field contains a bare `*` or `?` range (a `*/n` step
//!   with `n > 1` does not count, robfig issue #70), a day must match **both**; otherwise a day
//!   matching **either** field fires (classic Vixie cron);
//! - descriptors `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly` and
//!   `@every <duration>` (Go duration syntax; sluice also takes `d` and `w`);
//! - an optional `TZ=Zone/Name ` or `CRON_TZ=Zone/Name ` prefix with an IANA zone; the default
//!   is UTC (robfig defaults to the server's local zone; the Inngest cloud runs in UTC).
//!
//! Schedules that can never fire (`0 0 30 2 *`) are rejected, where robfig accepts them and
//! silently never runs them.
//!
//! # Ticks and daylight saving time
//!
//! A tick is every instant whose wall-clock time in the schedule's zone matches the fields. This is
//! exactly what robfig's `SpecSchedule.Next` produces (see its DST tests):
//!
//! - **Gap** (spring forward): a wall-clock time that does not exist that day is **skipped**. A
//!   `30 2 * * *` New York schedule does not fire on the day clocks jump from 02:00 to 03:00, and an
//!   hourly schedule goes 01:00 EST → 03:00 EDT. (Vixie cron and `croner` instead move such a job to
//!   03:00; we follow robfig so that sluice and Inngest agree.)
//! - **Overlap** (fall back): a wall-clock time that happens twice fires **twice**, once per
//!   instant. A `30 1 * * *` New York schedule fires at 01:30 EDT and again at 01:30 EST, as robfig's
//!   "1am nightly job (runs twice)" test requires.
//!
//! Offsets follow the zone: `TZ=Europe/Paris 0 9 * * *` fires at 08:00Z in winter (CET, +01:00)
//! and 07:00Z in summer (CEST, +02:00).
//!
//! The tick search scans wall-clock candidates with a margin of [`FOLD_MARGIN_MINUTES`] around the
//! search window, which finds every tick in any zone whose clocks never go back by more than
//! three hours at once. In the tz database that is every zone since 1995 (the largest later
//! fall-backs are Antarctica/Casey's three hours); only Antarctica/Vostok's seven-hour change in
//! 1994 is larger.
//!
//! # `@every`
//!
//! robfig anchors `@every` to the moment its scheduler started, which would move every tick each
//! time sluice restarts. sluice anchors it to the unix epoch instead: `@every 90s` ticks at every
//! multiple of 90 000 ms since 1970-01-01T00:00:00Z, on every node and after every restart. The
//! interval is truncated to whole seconds with a minimum of one second (as robfig does), and the
//! time zone, if any, is validated but plays no part.
//!
//! # Catch-up
//!
//! [`due_ticks`] decides what to fire when the scheduler wakes up, after a normal sleep or after a
//! restart. The default, [`CatchUp::FireLatestMissed`], fires at most one tick: the latest one that
//! is due, however many were missed, so a server that was down for a day does not fire a burst of
//! 1440 minutely runs. A tick at or before the function's registration never fires.
//!
//! # Jitter
//!
//! A trigger's optional `jitter` (`"30s"`) delays each run by a pseudo-random amount in
//! `[0, jitter]`. [`jitter_ms`] derives it from a seed (use [`jitter_seed`]) with SHA-256, so every
//! node computes the same delay for the same tick. The event carries `scheduledAt` (the nominal
//! tick) and `fireAt` (tick + jitter), see [`scheduled_event_data`].

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike};
use chrono_tz::Tz;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::duration::{format_rfc3339_ms, parse_duration};
use crate::error::ProtocolError;
use crate::function::split_cron_tz;

/// Wall-clock margin scanned on each side of a search window. It must be at least the largest
/// backward clock change (a DST "fall back") that the schedule's zone makes; see the module docs.
pub const FOLD_MARGIN_MINUTES: i64 = 180;

/// Under [`CatchUp::SkipMissed`], a tick at most this old when the scheduler looks is on time;
/// an older one was missed (the server was down or badly late) and is skipped.
pub const MISSED_TICK_GRACE_MS: i64 = 60_000;

/// How far past the current search point a schedule is searched before giving up. A satisfiable
/// five-field schedule always matches within 8 years (29 February across a century year).
const HORIZON_DAYS: u64 = 366 * 9;

const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DESCRIPTORS: &str = "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>";

/// A parsed cron trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    cron: String,
    tz: Tz,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Fields(Fields),
    /// `@every`: a whole number of seconds, in ms, anchored to the unix epoch.
    Every(i64),
}

/// The five fields as bit masks (bit `n` set = value `n` matches).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// The day-of-month field holds a bare `*` / `?` range (robfig's `starBit`).
    dom_star: bool,
    /// The day-of-week field holds a bare `*` / `?` range.
    dow_star: bool,
}

/// What [`due_ticks`] fires for ticks that passed while nobody was looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Fire the latest due tick, once, however many were missed (never a burst). The default.
    #[default]
    FireLatestMissed,
    /// Fire a tick only if it is at most [`MISSED_TICK_GRACE_MS`] old; drop older missed ticks.
    SkipMissed,
}

impl CronSchedule {
    /// Parse a trigger's `cron` string. The error's `function` is empty; see [`CronSchedule::parse_for`].
    pub fn parse(cron: &str) -> Result<CronSchedule, ProtocolError> {
        Self::parse_for("", cron)
    }

    /// Parse a trigger's `cron` string, naming `function` in the error.
    pub fn parse_for(function: &str, cron: &str) -> Result<CronSchedule, ProtocolError> {
        let err = |reason: String| ProtocolError::InvalidCron { function: function.into(), cron: cron.into(), reason };
        let trimmed = cron.trim();
        if trimmed.is_empty() {
            return Err(err("the cron expression is empty".into()));
        }
        let (zone, spec) = split_cron_tz(trimmed);
        if zone.is_none() && (spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=")) {
            return Err(err("a time zone prefix needs a schedule after it".into()));
        }
        let tz = match zone {
            // Go's time.LoadLocation("") is UTC, so robfig accepts `TZ= * * * * *`.
            None | Some("") => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                err(format!("unknown time zone {name:?}: expected an IANA zone name such as \"America/New_York\""))
            })?,
        };
        let kind = (if spec.starts_with('@') { parse_descriptor(spec) } else { parse_fields(spec) }).map_err(err)?;
        Ok(CronSchedule { cron: trimmed.to_string(), tz, kind })
    }

    /// The cron string as parsed (trimmed), time zone prefix included.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// The IANA name of the schedule's time zone (`"UTC"` when there is no prefix).
    pub fn time_zone(&self) -> &'static str {
        self.tz.name()
    }

    /// The `@every` interval in milliseconds, or `None` for a field schedule.
    pub fn interval_ms(&self) -> Option<i64> {
        match self.kind {
            Kind::Every(period) => Some(period),
            Kind::Fields(_) => None,
        }
    }

    /// The first tick strictly after `after_ms`, or `None` past the end of representable time.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        self.ticks_between(after_ms, i64::MAX, 1).first().copied()
    }

    /// The latest tick at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: i64) -> Option<i64> {
        match &self.kind {
            Kind::Every(period) => at_ms.div_euclid(*period).checked_mul(*period),
            Kind::Fields(fields) => self.last_wall_tick(fields, at_ms),
        }
    }

    /// Every tick in `(after_ms, until_ms]`, ascending, at most `limit` of them (the earliest).
    pub fn ticks_between(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        if limit == 0 || until_ms <= after_ms {
            return Vec::new();
        }
        match &self.kind {
            Kind::Every(period) => every_ticks(*period, after_ms, until_ms, limit),
            Kind::Fields(fields) => self.wall_ticks(fields, after_ms, until_ms, limit),
        }
    }

    fn margin(&self) -> TimeDelta {
        let name = self.tz.name();
        let fixed = self.tz == Tz::UTC
            || name.starts_with("Etc/")
            || matches!(name, "GMT" | "GMT0" | "GMT+0" | "GMT-0" | "Greenwich" | "UCT" | "Universal" | "Zulu");
        TimeDelta::minutes(if fixed { 0 } else { FOLD_MARGIN_MINUTES })
    }

    /// The instants a wall-clock time maps to: none in a gap, two in an overlap.
    fn resolve(&self, wall: NaiveDateTime) -> [Option<i64>; 2] {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(at) => [Some(at.timestamp_millis()), None],
            LocalResult::Ambiguous(first, second) => [Some(first.timestamp_millis()), Some(second.timestamp_millis())],
            LocalResult::None => [None, None],
        }
    }

    fn wall_at(&self, ms: i64) -> Option<NaiveDateTime> {
        DateTime::from_timestamp_millis(ms).map(|at| at.with_timezone(&self.tz).naive_local())
    }

    /// Scan matching wall-clock minutes upwards. Clocks that go back make wall order and instant
    /// order disagree inside an overlap, so the scan starts one margin early and stops one margin
    /// after the wall time of the last tick it keeps.
    fn wall_ticks(&self, fields: &Fields, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let margin = self.margin();
        let Some(mut cursor) = self.wall_at(after_ms).and_then(|w| w.checked_sub_signed(margin)) else {
            return Vec::new();
        };
        let last_wall = self.wall_at(until_ms).and_then(|w| w.checked_add_signed(margin));
        let horizon = TimeDelta::days(HORIZON_DAYS as i64);
        let mut found: Vec<(i64, NaiveDateTime)> = Vec::new();
        let mut productive = cursor;
        while let Some(wall) = fields.next_wall(cursor) {
            if last_wall.is_some_and(|last| wall > last)
                || (found.len() == limit && wall > found[limit - 1].1 + margin)
                || wall - productive > horizon
            {
                break;
            }
            for at in self.resolve(wall).into_iter().flatten() {
                if at > after_ms && at <= until_ms {
                    productive = wall;
                    let pos = found.partition_point(|(t, _)| *t < at);
                    if found.get(pos).map(|(t, _)| *t) != Some(at) {
                        found.insert(pos, (at, wall));
                        found.truncate(limit);
                    }
                }
            }
            let Some(next) = wall.checked_add_signed(TimeDelta::minutes(1)) else { break };
            cursor = next;
        }
        found.into_iter().map(|(at, _)| at).collect()
    }

    /// The mirror image of [`Self::wall_ticks`] for the latest tick at or before `at_ms`.
    fn last_wall_tick(&self, fields: &Fields, at_ms: i64) -> Option<i64> {
        let margin = self.margin();
        let mut cursor = self.wall_at(at_ms)?.checked_add_signed(margin)?;
        let horizon = TimeDelta::days(HORIZON_DAYS as i64);
        let mut best: Option<(i64, NaiveDateTime)> = None;
        let mut productive = cursor;
        while let Some(wall) = fields.prev_wall(cursor) {
            if best.is_some_and(|(_, best_wall)| wall < best_wall - margin) || productive - wall > horizon {
                break;
            }
            for at in self.resolve(wall).into_iter().flatten() {
                if at <= at_ms {
                    productive = wall;
                    if best.is_none_or(|(best_at, _)| at > best_at) {
                        best = Some((at, wall));
                    }
                }
            }
            cursor = wall.checked_sub_signed(TimeDelta::minutes(1))?;
        }
        best.map(|(at, _)| at)
    }
}

/// The ticks to fire now, given the last tick fired (`None` if none ever was), the current time and
/// when the function was registered. Returns at most one tick under either policy: the latest tick
/// in `(max(last_fired, registered_at), now]`, which [`CatchUp::SkipMissed`] also requires to be
/// at most [`MISSED_TICK_GRACE_MS`] old. After firing it, persist it as the new `last_fired_ms`.
pub fn due_ticks(
    schedule: &CronSchedule,
    last_fired_ms: Option<i64>,
    now_ms: i64,
    policy: CatchUp,
    registered_at_ms: i64,
) -> Vec<i64> {
    let floor = last_fired_ms.map_or(registered_at_ms, |last| last.max(registered_at_ms));
    if now_ms <= floor {
        return Vec::new();
    }
    let Some(latest) = schedule.last_at_or_before(now_ms).filter(|tick| *tick > floor) else {
        return Vec::new();
    };
    match policy {
        CatchUp::FireLatestMissed => vec![latest],
        CatchUp::SkipMissed if now_ms - latest <= MISSED_TICK_GRACE_MS => vec![latest],
        CatchUp::SkipMissed => Vec::new(),
    }
}

/// The canonical jitter seed for one tick of one function, so that every node derives the same delay.
pub fn jitter_seed(function_id: &str, scheduled_at_ms: i64) -> String {
    format!("{function_id}:{scheduled_at_ms}")
}

/// A deterministic delay in `[0, jitter]` ms for the trigger's `jitter` duration, derived from
/// `seed` with SHA-256. No jitter (or an empty one) is 0; a malformed one is `InvalidDuration`.
pub fn jitter_ms(jitter: Option<&str>, seed: &str) -> Result<i64, ProtocolError> {
    let Some(jitter) = jitter.map(str::trim).filter(|j| !j.is_empty()) else {
        return Ok(0);
    };
    let max = parse_duration(jitter)?;
    if max <= 0 {
        return Ok(0);
    }
    let digest = Sha256::digest(seed.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    // `max` is at most MAX_DURATION_MS, so the modulo bias is below 2^-27.
    Ok((u64::from_be_bytes(head) % (max as u64 + 1)) as i64)
}

/// The `data` of the `inngest/scheduled.timer` event for one tick.
pub fn scheduled_event_data(cron: &str, scheduled_at_ms: i64, fire_at_ms: i64) -> Value {
    json!({
        "cron": cron,
        "scheduledAt": format_rfc3339_ms(scheduled_at_ms),
        "fireAt": format_rfc3339_ms(fire_at_ms),
    })
}

fn every_ticks(period: i64, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
    let mut ticks = Vec::new();
    let mut k = after_ms.div_euclid(period);
    while ticks.len() < limit {
        let Some(at) = k.checked_add(1).and_then(|next| next.checked_mul(period)) else { break };
        if at > until_ms {
            break;
        }
        ticks.push(at);
        k += 1;
    }
    ticks
}

fn parse_descriptor(spec: &str) -> Result<Kind, String> {
    let lower = spec.to_ascii_lowercase();
    let fields = match lower.as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            let Some(duration) =
                lower.strip_prefix("@every").filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
            else {
                return Err(format!("unknown descriptor {spec:?}: expected {DESCRIPTORS}"));
            };
            let duration = duration.trim();
            let ms = parse_duration(duration)
                .map_err(|_| format!("@every needs a duration such as 90s or 1h30m, not {duration:?}"))?;
            // robfig: under a second rounds up to one; anything else is truncated to whole seconds.
            return Ok(Kind::Every((ms - ms % 1000).max(1000)));
        }
    };
    parse_fields(fields)
}

fn parse_fields(spec: &str) -> Result<Kind, String> {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    let (minute, _) = parse_field(parts[0], "minute", 0, 59, &[])?;
    let (hour, _) = parse_field(parts[1], "hour", 0, 23, &[])?;
    let (dom, dom_star) = parse_field(parts[2], "day-of-month", 1, 31, &[])?;
    let (month, _) = parse_field(parts[3], "month", 1, 12, &MONTH_NAMES)?;
    let (dow, dow_star) = parse_field(parts[4], "day-of-week", 0, 6, &WEEKDAY_NAMES)?;
    let fields = Fields { minute, hour, dom, month, dow, dom_star, dow_star };
    if !fields.satisfiable() {
        return Err("this schedule can never fire: no month has the day-of-month it names".into());
    }
    Ok(Kind::Fields(fields))
}

/// One field: a comma list of ranges. Returns the mask and whether a bare `*`/`?` range was seen.
/// `names[i]` stands for `min + i`.
fn parse_field(field: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let mut mask = 0u64;
    let mut star = false;
    for range in field.split(',') {
        let bad = |why: &str| format!("{what} field {field:?}: {why}");
        if range.is_empty() {
            return Err(bad("empty list item"));
        }
        let (span, step) = match range.split_once('/') {
            None => (range, None),
            Some((span, step)) => {
                let step: u32 = step.parse().map_err(|_| bad(&format!("step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(bad("a step must be a positive number"));
                }
                (span, Some(step))
            }
        };
        let value = |text: &str| -> Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
                return Ok(min + i as u32);
            }
            let v: u32 = text.parse().map_err(|_| bad(&format!("{text:?} is not a number or name")))?;
            if v < min || v > max {
                return Err(bad(&format!("{v} is outside {min}-{max}")));
            }
            Ok(v)
        };
        let (start, end, bare) = if span == "*" || span == "?" {
            (min, max, true)
        } else {
            match span.split_once('-') {
                None => {
                    let v = value(span)?;
                    // robfig: `N/step` means `N-max/step`.
                    (v, if step.is_some() { max } else { v }, false)
                }
                Some((low, high)) => {
                    let (low, high) = (value(low)?, value(high)?);
                    if low > high {
                        return Err(bad(&format!("range {low}-{high} runs backwards")));
                    }
                    (low, high, false)
                }
            }
        };
        let step = step.unwrap_or(1);
        // robfig keeps the star meaning only for `*` and `*/1` (issue #70).
        star |= bare && step == 1;
        let mut v = start;
        while v <= end {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok((mask, star))
}

fn has(mask: u64, value: u32) -> bool {
    value < 64 && (mask >> value) & 1 == 1
}

/// The smallest set bit at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// The largest set bit at or below `from`.
fn prev_bit(mask: u64, from: u32) -> Option<u32> {
    let low = if from >= 63 { mask } else { mask & ((1u64 << (from + 1)) - 1) };
    (low != 0).then(|| 63 - low.leading_zeros())
}

fn days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

fn last_of_previous_month(date: NaiveDate) -> Option<NaiveDate> {
    date.with_day(1)?.pred_opt()
}

impl Fields {
    fn date_matches(&self, date: NaiveDate) -> bool {
        if !has(self.month, date.month()) {
            return false;
        }
        let dom = has(self.dom, date.day());
        let dow = has(self.dow, date.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether some day ever matches. Only a restricted day-of-month under a `*` day-of-week can
    /// fail (every month has every weekday).
    fn satisfiable(&self) -> bool {
        if self.dom_star || !self.dow_star {
            return true;
        }
        (1..=12).filter(|m| has(self.month, *m)).any(|m| (1..=days_in_month(m)).any(|d| has(self.dom, d)))
    }

    /// The earliest matching wall-clock minute at or after `from`.
    fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut start = from.with_second(0)?.with_nanosecond(0)?;
        if start < from {
            start = start.checked_add_signed(TimeDelta::minutes(1))?;
        }
        let horizon = start.date().checked_add_days(Days::new(HORIZON_DAYS))?;
        let (mut date, mut hour, mut minute) = (start.date(), start.hour(), start.minute());
        while date <= horizon {
            if !has(self.month, date.month()) {
                (date, hour, minute) = (first_of_next_month(date)?, 0, 0);
                continue;
            }
            if self.date_matches(date) {
                while hour < 24 {
                    if has(self.hour, hour) {
                        if let Some(m) = next_bit(self.minute, minute) {
                            return date.and_hms_opt(hour, m, 0);
                        }
                    }
                    (hour, minute) = (hour + 1, 0);
                }
            }
            (date, hour, minute) = (date.succ_opt()?, 0, 0);
        }
        None
    }

    /// The latest matching wall-clock minute at or before `from`.
    fn prev_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let horizon = from.date().checked_sub_days(Days::new(HORIZON_DAYS))?;
        let (mut date, mut hour, mut minute) = (from.date(), from.hour(), from.minute());
        while date >= horizon {
            if !has(self.month, date.month()) {
                (date, hour, minute) = (last_of_previous_month(date)?, 23, 59);
                continue;
            }
            if self.date_matches(date) {
                loop {
                    if has(self.hour, hour) {
                        if let Some(m) = prev_bit(self.minute, minute) {
                            return date.and_hms_opt(hour, m, 0);
                        }
                    }
                    if hour == 0 {
                        break;
                    }
                    (hour, minute) = (hour - 1, 59);
                }
            }
            (date, hour, minute) = (date.pred_opt()?, 23, 59);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::parse_instant;

    fn ms(s: &str) -> i64 {
        parse_instant(s).unwrap_or_else(|| panic!("bad instant {s}"))
    }

    fn iso(ticks: &[i64]) -> Vec<String> {
        ticks.iter().map(|t| format_rfc3339_ms(*t)).collect()
    }

    fn sched(cron: &str) -> CronSchedule {
        CronSchedule::parse(cron).unwrap_or_else(|e| panic!("{cron}: {e}"))
    }

    fn next(cron: &str, after: &str) -> String {
        format_rfc3339_ms(sched(cron).next_after(ms(after)).expect("a next tick"))
    }

    fn between(cron: &str, after: &str, until: &str, limit: usize) -> Vec<String> {
        iso(&sched(cron).ticks_between(ms(after), ms(until), limit))
    }

    #[test]
    fn every_descriptor() {
        // 2025-07-09 is a Wednesday.
        let after = "2025-07-09T15:04:05Z";
        assert_eq!(next("@yearly", after), "2026-01-01T00:00:00.000Z");
        assert_eq!(next("@annually", after), "2026-01-01T00:00:00.000Z");
        assert_eq!(next("@monthly", after), "2025-08-01T00:00:00.000Z");
        assert_eq!(next("@weekly", after), "2025-07-13T00:00:00.000Z"); // Sunday
        assert_eq!(next("@daily", after), "2025-07-10T00:00:00.000Z");
        assert_eq!(next("@midnight", after), "2025-07-10T00:00:00.000Z");
        assert_eq!(next("@hourly", after), "2025-07-09T16:00:00.000Z");
        assert_eq!(next("@every 1h", after), "2025-07-09T16:00:00.000Z");
        assert_eq!(next("@DAILY", after), "2025-07-10T00:00:00.000Z");
        assert_eq!(next("TZ=Europe/Paris @daily", after), "2025-07-09T22:00:00.000Z");
        assert_eq!(sched("@weekly").interval_ms(), None);
        assert_eq!(sched("@every 1h").interval_ms(), Some(3_600_000));
    }

    #[test]
    fn every_fifteen_minutes() {
        assert_eq!(next("*/15 * * * *", "2025-07-09T10:07:30Z"), "2025-07-09T10:15:00.000Z");
        // Strictly after: a tick at `after` is not returned again.
        assert_eq!(next("*/15 * * * *", "2025-07-09T10:15:00Z"), "2025-07-09T10:30:00.000Z");
        assert_eq!(next("*/15 * * * *", "2025-07-09T23:59:59.999Z"), "2025-07-10T00:00:00.000Z");
        assert_eq!(
            between("*/15 * * * *", "2025-07-09T10:00:00Z", "2025-07-09T11:00:00Z", 10),
            ["10:15", "10:30", "10:45", "11:00"].map(|t| format!("2025-07-09T{t}:00.000Z"))
        );
        assert_eq!(
            between("5-20/5 9 * * *", "2025-07-09T00:00:00Z", "2025-07-09T23:00:00Z", 10),
            ["09:05", "09:10", "09:15", "09:20"].map(|t| format!("2025-07-09T{t}:00.000Z"))
        );
        // `N/step` is `N-max/step`.
        assert_eq!(
            between("50/4 9 * * *", "2025-07-09T00:00:00Z", "2025-07-09T23:00:00Z", 10),
            ["09:50", "09:54", "09:58"].map(|t| format!("2025-07-09T{t}:00.000Z"))
        );
    }

    #[test]
    fn weekdays_in_new_york_across_both_dst_changes() {
        let cron = "TZ=America/New_York 0 9 * * 1-5";
        // US DST starts Sunday 2025-03-09: 09:00 is 14:00Z (EST) before, 13:00Z (EDT) after.
        assert_eq!(
            between(cron, "2025-03-06T00:00:00Z", "2025-03-11T23:00:00Z", 10),
            ["2025-03-06T14", "2025-03-07T14", "2025-03-10T13", "2025-03-11T13"].map(|t| format!("{t}:00:00.000Z"))
        );
        // And ends Sunday 2025-11-02.
        assert_eq!(
            between(cron, "2025-10-30T00:00:00Z", "2025-11-04T23:00:00Z", 10),
            ["2025-10-30T13", "2025-10-31T13", "2025-11-03T14", "2025-11-04T14"].map(|t| format!("{t}:00:00.000Z"))
        );
        assert_eq!(sched(cron).time_zone(), "America/New_York");
        // Named days and months, any case.
        let named = sched("TZ=America/New_York 0 9 * JAN-dec Mon-FRI");
        let (after, until) = (ms("2025-01-01T00:00:00Z"), ms("2026-01-01T00:00:00Z"));
        assert_eq!(named.ticks_between(after, until, 400), sched(cron).ticks_between(after, until, 400));
        assert_eq!(named.ticks_between(after, until, 400).len(), 261);
    }

    #[test]
    fn paris_offsets_winter_and_summer() {
        let cron = "TZ=Europe/Paris 0 9 * * *";
        assert_eq!(next(cron, "2025-01-15T00:00:00Z"), "2025-01-15T08:00:00.000Z"); // CET, +01:00
        assert_eq!(next(cron, "2025-07-15T00:00:00Z"), "2025-07-15T07:00:00.000Z");
        // CEST, +02:00
    }

    #[test]
    fn cron_tz_prefix() {
        let s = sched("CRON_TZ=Asia/Tokyo 0 9 * * *");
        assert_eq!(s.time_zone(), "Asia/Tokyo");
        assert_eq!(s.cron(), "CRON_TZ=Asia/Tokyo 0 9 * * *");
        assert_eq!(format_rfc3339_ms(s.next_after(ms("2025-07-09T01:00:00Z")).unwrap()), "2025-07-10T00:00:00.000Z");
        assert_eq!(sched("0 9 * * *").time_zone(), "UTC");
        assert_eq!(sched("TZ=UTC 0 9 * * *").next_after(0), sched("0 9 * * *").next_after(0));
    }

    #[test]
    fn a_time_in_the_spring_gap_is_skipped_like_robfig() {
        // 2025-03-09 02:00-03:00 does not exist in New York.
        assert_eq!(
            between("TZ=America/New_York 30 2 * * *", "2025-03-08T00:00:00Z", "2025-03-10T23:00:00Z", 10),
            ["2025-03-08T07:30:00.000Z", "2025-03-10T06:30:00.000Z"]
        );
        assert_eq!(
            between("TZ=America/New_York 0 * * * *", "2025-03-09T05:30:00Z", "2025-03-09T08:30:00Z", 10),
            ["2025-03-09T06:00:00.000Z", "2025-03-09T07:00:00.000Z", "2025-03-09T08:00:00.000Z"] // 01:00 EST, 03:00 EDT, 04:00 EDT
        );
    }

    #[test]
    fn a_time_in_the_autumn_overlap_fires_twice_like_robfig() {
        let s = sched("TZ=America/New_York 30 1 * * *");
        // 01:30 EDT (05:30Z), then 01:30 EST (06:30Z).
        assert_eq!(
            iso(&s.ticks_between(ms("2025-11-01T12:00:00Z"), ms("2025-11-03T12:00:00Z"), 10)),
            ["2025-11-02T05:30:00.000Z", "2025-11-02T06:30:00.000Z", "2025-11-03T06:30:00.000Z"]
        );
        // From 01:45 EDT the next tick is 01:30 EST, although its wall-clock time is earlier.
        assert_eq!(format_rfc3339_ms(s.next_after(ms("2025-11-02T05:45:00Z")).unwrap()), "2025-11-02T06:30:00.000Z");
        assert_eq!(
            format_rfc3339_ms(s.last_at_or_before(ms("2025-11-02T06:40:00Z")).unwrap()),
            "2025-11-02T06:30:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(s.last_at_or_before(ms("2025-11-02T06:20:00Z")).unwrap()),
            "2025-11-02T05:30:00.000Z"
        );
        // An hourly schedule fires on each real hour: 01:00 EDT, 01:00 EST, 02:00 EST.
        assert_eq!(
            between("TZ=America/New_York 0 * * * *", "2025-11-02T04:30:00Z", "2025-11-02T07:00:00Z", 10),
            ["2025-11-02T05:00:00.000Z", "2025-11-02T06:00:00.000Z", "2025-11-02T07:00:00.000Z"]
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_follow_robfig() {
        // Both restricted: either matches. 2025-07-01 is a Tuesday.
        assert_eq!(
            between("0 0 1,15 * 0", "2025-06-30T00:00:00Z", "2025-07-16T00:00:00Z", 10),
            ["2025-07-01", "2025-07-06", "2025-07-13", "2025-07-15"].map(|d| format!("{d}T00:00:00.000Z"))
        );
        // A bare `*` makes both required.
        assert_eq!(next("0 0 * * 1", "2025-07-09T00:00:00Z"), "2025-07-14T00:00:00.000Z");
        // `*/10` is not a star (robfig #70): the 11th (Friday) and Sundays both fire.
        assert_eq!(
            between("0 0 */10 * 0", "2025-07-10T00:00:00Z", "2025-07-22T00:00:00Z", 10),
            ["2025-07-11", "2025-07-13", "2025-07-20", "2025-07-21"].map(|d| format!("{d}T00:00:00.000Z"))
        );
        // `?` is `*`; 29 February waits for a leap year.
        assert_eq!(next("0 0 29 2 ?", "2025-03-01T00:00:00Z"), "2028-02-29T00:00:00.000Z");
        assert_eq!(next("0 0 29 2 ?", "2096-03-01T00:00:00Z"), "2104-02-29T00:00:00.000Z");
    }

    /// Every tick by brute force: each UTC minute whose wall-clock time matches.
    fn brute_force(s: &CronSchedule, from: i64, to: i64) -> Vec<i64> {
        let Kind::Fields(f) = &s.kind else { unreachable!() };
        (from / 60_000..=to / 60_000)
            .map(|m| m * 60_000)
            .filter(|at| {
                let wall = s.wall_at(*at).unwrap();
                wall.second() == 0
                    && f.date_matches(wall.date())
                    && has(f.hour, wall.hour())
                    && has(f.minute, wall.minute())
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_around_every_transition() {
        // 1 h (New York, Paris), 30 min (Lord Howe), 2 h (Troll) and 3 h (Casey, 2020) clock changes.
        let zones = [
            ("America/New_York", 2025),
            ("Europe/Paris", 2025),
            ("Australia/Lord_Howe", 2025),
            ("Antarctica/Troll", 2025),
            ("Antarctica/Casey", 2020),
        ];
        let specs = ["*/7 * * * *", "30 1 * * *", "0 * * * *", "*/30 2 * * *", "15 0-4 * * *", "0 9 * * 1-5"];
        let mut transitions_seen = 0;
        for (zone, year) in zones {
            let start = ms(&format!("{year}-01-01T00:00:00Z"));
            let probe = sched(&format!("TZ={zone} 0 0 * * *"));
            let offset = |at: i64| (probe.wall_at(at).unwrap().and_utc().timestamp_millis() - at) / 60_000;
            let transitions: Vec<i64> = (0..366 * 24)
                .map(|h| start + h * 3_600_000)
                .filter(|at| offset(*at) != offset(at - 3_600_000))
                .collect();
            assert!(!transitions.is_empty(), "{zone} {year}");
            transitions_seen += transitions.len();
            for spec in specs {
                let s = sched(&format!("TZ={zone} {spec}"));
                for t in &transitions {
                    let (from, to) = (t - 36 * 3_600_000, t + 36 * 3_600_000);
                    let expected = brute_force(&s, from, to);
                    assert_eq!(s.ticks_between(from - 1, to, 10_000), expected, "{zone} {spec} near {}", iso(&[*t])[0]);
                    for probe_at in (from..to).step_by(17 * 60_000 + 123) {
                        if let Some(want) = expected.iter().find(|x| **x > probe_at) {
                            assert_eq!(s.next_after(probe_at), Some(*want), "{zone} {spec} next after {probe_at}");
                        }
                        if let Some(want) = expected.iter().rev().find(|x| **x <= probe_at) {
                            assert_eq!(s.last_at_or_before(probe_at), Some(*want), "{zone} {spec} last at {probe_at}");
                        }
                    }
                }
            }
        }
        assert!(transitions_seen >= 9, "{transitions_seen}");
    }

    #[test]
    fn every_is_anchored_to_the_epoch() {
        let s = sched("@every 90s");
        assert_eq!(s.interval_ms(), Some(90_000));
        let now = ms("2025-07-09T10:00:05.123Z");
        let tick = s.next_after(now).unwrap();
        assert_eq!(tick % 90_000, 0);
        assert!(tick > now && tick - now <= 90_000);
        // Any start point yields the same grid: restart-safe and identical on every node.
        assert_eq!(s.next_after(now + 1), Some(tick));
        assert_eq!(s.next_after(tick - 1), Some(tick));
        assert_eq!(s.next_after(tick), Some(tick + 90_000));
        assert_eq!(s.last_at_or_before(tick), Some(tick));
        assert_eq!(s.last_at_or_before(tick - 1), Some(tick - 90_000));
        assert_eq!(s.ticks_between(tick - 1, tick + 180_000, 10), vec![tick, tick + 90_000, tick + 180_000]);
        // Truncated to whole seconds, at least one.
        assert_eq!(sched("@every 1500ms").interval_ms(), Some(1000));
        assert_eq!(sched("@every 250ms").interval_ms(), Some(1000));
        assert_eq!(sched("@every 1h30m").interval_ms(), Some(5_400_000));
        assert_eq!(sched("TZ=Asia/Tokyo @every 90s").next_after(now), Some(tick));
        assert_eq!(s.next_after(-1), Some(0));
        assert_eq!(s.next_after(-90_001), Some(-90_000));
    }

    #[test]
    fn ticks_between_honours_the_limit_and_bounds() {
        let s = sched("*/15 * * * *");
        let (after, until) = (ms("2025-07-09T00:00:00Z"), ms("2025-07-10T00:00:00Z"));
        assert_eq!(s.ticks_between(after, until, 1000).len(), 96);
        assert_eq!(
            iso(&s.ticks_between(after, until, 3)),
            ["00:15", "00:30", "00:45"].map(|t| format!("2025-07-09T{t}:00.000Z"))
        );
        assert!(s.ticks_between(after, until, 0).is_empty());
        assert!(s.ticks_between(until, after, 10).is_empty());
        assert!(s.ticks_between(after, after + 899_999, 10).is_empty());
        assert_eq!(s.ticks_between(after, after + 900_000, 10), vec![after + 900_000]);
        let paris = sched("TZ=Europe/Paris */15 * * * *");
        assert_eq!(paris.ticks_between(after, until, 1000), s.ticks_between(after, until, 1000));
        assert_eq!(paris.ticks_between(after, until, 2), s.ticks_between(after, until, 2));
        assert_eq!(s.next_after(i64::MAX), None);
    }

    #[test]
    fn due_ticks_fires_one_tick_after_a_long_gap() {
        let s = sched("*/5 * * * *");
        let registered = ms("2025-07-01T00:00:00Z");
        let last = ms("2025-07-09T10:00:00Z");
        let now = ms("2025-07-10T13:07:00Z"); // a day and three hours later: 327 ticks missed
        let due = due_ticks(&s, Some(last), now, CatchUp::FireLatestMissed, registered);
        assert_eq!(iso(&due), ["2025-07-10T13:05:00.000Z"]);
        assert_eq!(CatchUp::default(), CatchUp::FireLatestMissed);
        // Nothing new since the last fire.
        assert!(due_ticks(&s, Some(due[0]), now, CatchUp::FireLatestMissed, registered).is_empty());
        // SkipMissed drops a stale tick but fires one that is on time.
        assert!(due_ticks(&s, Some(last), now, CatchUp::SkipMissed, registered).is_empty());
        let on_time = ms("2025-07-10T13:05:00.250Z");
        assert_eq!(
            iso(&due_ticks(&s, Some(last), on_time, CatchUp::SkipMissed, registered)),
            ["2025-07-10T13:05:00.000Z"]
        );
        // Never fired yet: the latest tick after registration.
        assert_eq!(iso(&due_ticks(&s, None, now, CatchUp::FireLatestMissed, registered)), ["2025-07-10T13:05:00.000Z"]);
        // A clock that went backwards fires nothing.
        assert!(due_ticks(&s, Some(now + 60_000), now, CatchUp::FireLatestMissed, registered).is_empty());
    }

    #[test]
    fn due_ticks_never_fires_a_tick_from_before_registration() {
        let s = sched("0 9 * * *");
        let registered = ms("2025-07-09T09:30:00Z");
        for now in ["2025-07-09T09:30:00Z", "2025-07-09T12:00:00Z", "2025-07-10T08:59:59Z"] {
            assert!(due_ticks(&s, None, ms(now), CatchUp::FireLatestMissed, registered).is_empty(), "{now}");
        }
        // A tick exactly at registration does not fire either.
        assert!(due_ticks(&s, None, ms("2025-07-09T12:00:00Z"), CatchUp::FireLatestMissed, ms("2025-07-09T09:00:00Z"))
            .is_empty());
        // A stale last_fired from an earlier registration does not bring old ticks back.
        let old = Some(ms("2025-07-01T09:00:00Z"));
        assert!(due_ticks(&s, old, ms("2025-07-10T08:00:00Z"), CatchUp::FireLatestMissed, registered).is_empty());
        assert_eq!(
            iso(&due_ticks(&s, old, ms("2025-07-10T09:00:01Z"), CatchUp::FireLatestMissed, registered)),
            ["2025-07-10T09:00:00.000Z"]
        );
    }

    #[test]
    fn jitter_is_bounded_and_deterministic() {
        let max = 30_000;
        let mut seen = std::collections::BTreeSet::new();
        for tick in 0..500 {
            let seed = jitter_seed("app-nightly", tick * 60_000);
            let j = jitter_ms(Some("30s"), &seed).unwrap();
            assert!((0..=max).contains(&j), "{j}");
            assert_eq!(jitter_ms(Some("30s"), &seed).unwrap(), j);
            seen.insert(j);
        }
        assert!(seen.len() > 400, "jitter should spread out, got {} distinct values", seen.len());
        assert_eq!(jitter_seed("app-f", 1_000), "app-f:1000");
        assert_ne!(jitter_ms(Some("1h"), "app-a:0").unwrap(), jitter_ms(Some("1h"), "app-b:0").unwrap());
        assert_eq!(jitter_ms(None, "x").unwrap(), 0);
        assert_eq!(jitter_ms(Some(""), "x").unwrap(), 0);
        assert_eq!(jitter_ms(Some("0s"), "x").unwrap(), 0);
        assert!((0..=1).contains(&jitter_ms(Some("1ms"), "x").unwrap()));
        assert_eq!(jitter_ms(Some("soon"), "x").unwrap_err().code(), "SLUICE-1103");
    }

    #[test]
    fn scheduled_event_data_shape() {
        let tick = ms("2025-07-09T09:00:00Z");
        assert_eq!(
            scheduled_event_data("TZ=Europe/Paris 0 11 * * *", tick, tick + 1_234),
            json!({"cron":"TZ=Europe/Paris 0 11 * * *","scheduledAt":"2025-07-09T09:00:00.000Z","fireAt":"2025-07-09T09:00:01.234Z"})
        );
    }

    #[test]
    fn invalid_zones_and_crons_are_sluice_1102() {
        let reason = |cron: &str| match CronSchedule::parse_for("app-f", cron) {
            Err(e @ ProtocolError::InvalidCron { .. }) => {
                assert_eq!(e.code(), "SLUICE-1102", "{cron}");
                let ProtocolError::InvalidCron { function, cron: echoed, reason } = e else { unreachable!() };
                assert_eq!((function.as_str(), echoed.as_str()), ("app-f", cron));
                reason
            }
            other => panic!("{cron}: expected InvalidCron, got {other:?}"),
        };
        assert!(reason("TZ=Mars/Olympus_Mons 0 9 * * *").contains("unknown time zone \"Mars/Olympus_Mons\""));
        assert!(reason("CRON_TZ=europe/paris 0 9 * * *").contains("unknown time zone"));
        assert!(reason("TZ=Local 0 9 * * *").contains("unknown time zone"));
        assert!(reason("TZ=Europe/Paris").contains("needs a schedule"));
        assert!(reason("").contains("empty"));
        assert!(reason("not a cron").contains("expected exactly 5 fields"));
        assert!(reason("0 0 9 * * *").contains("found 6"));
        assert!(reason("60 * * * *").contains("outside 0-59"));
        assert!(reason("0 24 * * *").contains("outside 0-23"));
        assert!(reason("0 0 0 * *").contains("outside 1-31"));
        assert!(reason("0 0 * 13 *").contains("outside 1-12"));
        assert!(reason("0 0 * * 7").contains("outside 0-6"));
        assert!(reason("0 0 * * L").contains("not a number or name"));
        assert!(reason("0 0 * * 1#2").contains("not a number or name"));
        assert!(reason("*/0 * * * *").contains("positive"));
        assert!(reason("*/5/5 * * * *").contains("not a number"));
        assert!(reason("0-0-0 * * * *").contains("not a number"));
        assert!(reason("59-2 * * * *").contains("backwards"));
        assert!(reason("1,,2 * * * *").contains("empty list item"));
        assert!(reason("0 0 * * XYZ").contains("not a number or name"));
        assert!(reason("0 0 30 2 *").contains("never fire"));
        assert!(reason("@fortnightly").contains("unknown descriptor"));
        assert!(reason("@everyday").contains("unknown descriptor"));
        assert!(reason("@every").contains("@every needs a duration"));
        assert!(reason("@every -1s").contains("@every needs a duration"));
        assert!(reason("@every soon").contains("@every needs a duration"));
        assert_eq!(CronSchedule::parse("TZ=Nowhere * * * * *").unwrap_err().code(), "SLUICE-1102");
    }
}
