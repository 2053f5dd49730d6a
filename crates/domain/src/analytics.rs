//! Analytics: what the dashboards show, and the rules that turn stored
//! counts into it.
//!
//! The store counts (per UTC day and tenant); this module decides what the
//! counts mean:
//! - **Funnel.** A lead *enters* a status when it is created in it, and each
//!   time its status moves to it (a `status_changed` event). Its first
//!   status is the `from` of its first status move, or its status if it
//!   never moved. Conversion between consecutive stages of the main path
//!   (new → contacted → qualified → won) follows leads, not entries: of
//!   the leads that first entered a stage within the range, the share that
//!   entered the next one at or after that (by `as_of`). It never exceeds
//!   1, whatever leads re-enter or skip.
//! - **Agents.** Per agent, all time: leads assigned now (not deleted),
//!   approvals drafted, approvals they approved (approved or since sent),
//!   rejected, messages they marked sent, and the median time from a lead's
//!   creation to its first outbound touch at or after it, over the leads
//!   assigned to them now.
//! - **Activity.** Events per UTC day, channel and direction. An event's
//!   channel is the one its metadata names (a sent approval, a delivery),
//!   else the one its kind implies ([`activity_channel`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::Serialize;

use crate::{AgentId, Channel, Direction, EventKind, LeadStatus, ValueError};

/// The longest range a query may span, in days (about ten years of days,
/// or as many weekly buckets as anyone charts).
pub const MAX_RANGE_DAYS: u64 = 3_660;

/// How finely a range is bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// One bucket per UTC day.
    #[default]
    Day,
    /// One bucket per ISO week (Monday to Sunday, UTC).
    Week,
}

impl std::str::FromStr for Interval {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            _ => Err(ValueError::Invalid("must be day or week")),
        }
    }
}

impl Interval {
    /// The first day of the bucket `day` falls in.
    #[must_use]
    pub fn bucket_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => day,
            Self::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
        }
    }
}

/// Days `from` to `to`, both included, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl DateRange {
    /// A range; `to` may not precede `from`, nor lie more than
    /// [`MAX_RANGE_DAYS`] after it.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] naming the rule broken.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, ValueError> {
        if !(1..=9999).contains(&from.year()) || !(1..=9999).contains(&to.year()) {
            return Err(ValueError::Invalid(
                "must be a date between years 1 and 9999",
            ));
        }
        if to < from {
            return Err(ValueError::Invalid("must not be before from"));
        }
        if (to - from).num_days() >= i64::try_from(MAX_RANGE_DAYS).unwrap_or(i64::MAX) {
            return Err(ValueError::Invalid("must be within 3660 days of from"));
        }
        Ok(Self { from, to })
    }

    /// The last `days` days up to `today`, both included, but none before
    /// year 1.
    #[must_use]
    pub fn ending(today: NaiveDate, days: u64) -> Self {
        let first = NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or(NaiveDate::MIN);
        let from = today
            .checked_sub_days(Days::new(days.saturating_sub(1)))
            .unwrap_or(today)
            .max(first)
            .min(today);
        Self { from, to: today }
    }

    /// The first day.
    #[must_use]
    pub const fn from(self) -> NaiveDate {
        self.from
    }

    /// The last day.
    #[must_use]
    pub const fn to(self) -> NaiveDate {
        self.to
    }

    /// The day after the last, for half-open comparisons; `None` past the
    /// calendar's end.
    #[must_use]
    pub fn end_exclusive(self) -> Option<NaiveDate> {
        self.to.succ_opt()
    }

    /// Whether `day` is in it.
    #[must_use]
    pub fn contains(self, day: NaiveDate) -> bool {
        self.from <= day && day <= self.to
    }

    /// The first day of every bucket that overlaps the range, in order.
    #[must_use]
    pub fn buckets(self, interval: Interval) -> Vec<NaiveDate> {
        let mut out = Vec::new();
        let mut day = interval.bucket_of(self.from);
        while day <= self.to {
            out.push(day);
            let step = match interval {
                Interval::Day => 1,
                Interval::Week => 7,
            };
            match day.checked_add_days(Days::new(step)) {
                Some(next) => day = next,
                None => break,
            }
        }
        out
    }
}

/// Figures and the time they are true of: every write committed before
/// `as_of` is counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot<T> {
    /// When the figures were taken.
    pub as_of: DateTime<Utc>,
    /// The figures.
    pub rows: T,
}

/// Leads that entered `status` on `day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusEntries {
    /// The UTC day.
    pub day: NaiveDate,
    /// The status entered.
    pub status: LeadStatus,
    /// How many entries.
    pub entered: u64,
}

/// The leads that first entered `from` on `day`, and how many of them
/// entered the main path's next stage at or after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cohort {
    /// The UTC day of their first entry into `from`.
    pub day: NaiveDate,
    /// The stage (new, contacted or qualified).
    pub from: LeadStatus,
    /// Leads.
    pub entered: u64,
    /// Of them, those that went on to the next stage.
    pub converted: u64,
}

/// What the funnel is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunnelCounts {
    /// Entries per day and status.
    pub entries: Vec<StatusEntries>,
    /// Cohorts per day and stage.
    pub cohorts: Vec<Cohort>,
}

/// Entries of one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageCount {
    /// The status.
    pub status: LeadStatus,
    /// Entries in the range (or bucket).
    pub entered: u64,
}

/// Conversion from one main-path stage to the next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversion {
    /// The earlier stage.
    pub from: LeadStatus,
    /// The next one.
    pub to: LeadStatus,
    /// Leads that first entered `from` within the range.
    pub leads: u64,
    /// Of them, those that entered `to` at or after that.
    pub converted: u64,
    /// `converted / leads`, rounded to four places; absent when no lead
    /// entered `from`.
    pub rate: Option<f64>,
}

/// The main path's next stage after `from`, if it has one.
#[must_use]
pub const fn next_stage(from: LeadStatus) -> Option<LeadStatus> {
    match from {
        LeadStatus::New => Some(LeadStatus::Contacted),
        LeadStatus::Contacted => Some(LeadStatus::Qualified),
        LeadStatus::Qualified => Some(LeadStatus::Won),
        LeadStatus::Nurturing | LeadStatus::Won | LeadStatus::Lost => None,
    }
}

/// One bucket of the funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelBucket {
    /// Its first day.
    pub start: NaiveDate,
    /// Entries per status, every status listed.
    pub stages: Vec<StageCount>,
}

/// `GET /v1/analytics/funnel`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    /// When the figures were taken.
    pub as_of: DateTime<Utc>,
    /// The first day counted.
    pub from: NaiveDate,
    /// The last day counted.
    pub to: NaiveDate,
    /// The bucket size.
    pub interval: Interval,
    /// Entries per status over the whole range.
    pub stages: Vec<StageCount>,
    /// Conversion along new → contacted → qualified → won.
    pub conversion: Vec<Conversion>,
    /// Entries per bucket.
    pub intervals: Vec<FunnelBucket>,
}

/// The funnel's main path; nurturing and lost are side branches.
pub const MAIN_PATH: [LeadStatus; 4] = [
    LeadStatus::New,
    LeadStatus::Contacted,
    LeadStatus::Qualified,
    LeadStatus::Won,
];

fn stages(counts: &BTreeMap<LeadStatus, u64>) -> Vec<StageCount> {
    LeadStatus::ALL
        .iter()
        .map(|&status| StageCount {
            status,
            entered: counts.get(&status).copied().unwrap_or(0),
        })
        .collect()
}

/// `part / whole`, to four places.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts far below 2^52; a rate needs no more"
    )]
    (whole > 0).then(|| ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0)
}

impl Funnel {
    /// The funnel of `range` by `interval`, from the store's daily counts
    /// (rows outside the range are ignored).
    #[must_use]
    pub fn build(range: DateRange, interval: Interval, snapshot: Snapshot<FunnelCounts>) -> Self {
        let mut total: BTreeMap<LeadStatus, u64> = BTreeMap::new();
        let mut per: BTreeMap<NaiveDate, BTreeMap<LeadStatus, u64>> = range
            .buckets(interval)
            .into_iter()
            .map(|b| (b, BTreeMap::new()))
            .collect();
        for row in snapshot
            .rows
            .entries
            .iter()
            .filter(|r| range.contains(r.day))
        {
            *total.entry(row.status).or_default() += row.entered;
            *per.entry(interval.bucket_of(row.day))
                .or_default()
                .entry(row.status)
                .or_default() += row.entered;
        }
        let conversion = MAIN_PATH
            .windows(2)
            .map(|pair| {
                let (leads, converted) = snapshot
                    .rows
                    .cohorts
                    .iter()
                    .filter(|c| c.from == pair[0] && range.contains(c.day))
                    .fold((0, 0), |(l, c), row| (l + row.entered, c + row.converted));
                Conversion {
                    from: pair[0],
                    to: pair[1],
                    leads,
                    converted,
                    rate: ratio(converted, leads),
                }
            })
            .collect();
        Self {
            as_of: snapshot.as_of,
            from: range.from,
            to: range.to,
            interval,
            stages: stages(&total),
            conversion,
            intervals: per
                .iter()
                .map(|(start, counts)| FunnelBucket {
                    start: *start,
                    stages: stages(counts),
                })
                .collect(),
        }
    }
}

/// One agent's figures, all time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentFigures {
    /// The agent.
    pub agent_id: AgentId,
    /// Leads assigned to them now, not deleted.
    pub leads_owned: u64,
    /// Approvals they drafted.
    pub approvals_drafted: u64,
    /// Approvals they approved (since sent or not).
    pub approvals_approved: u64,
    /// Approvals they rejected.
    pub approvals_rejected: u64,
    /// Messages they marked sent.
    pub messages_sent: u64,
    /// Median seconds from a lead's creation to its first outbound touch
    /// (at or after creation), over their leads that had one; absent when
    /// none had.
    pub median_first_touch_seconds: Option<f64>,
}

/// `GET /v1/analytics/agents`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentsReport {
    /// When the figures were taken.
    pub as_of: DateTime<Utc>,
    /// Every agent of the tenant, by id.
    pub agents: Vec<AgentFigures>,
}

impl AgentsReport {
    /// The report, agents sorted by id.
    #[must_use]
    pub fn build(snapshot: Snapshot<Vec<AgentFigures>>) -> Self {
        let mut agents = snapshot.rows;
        agents.sort_by_key(|a| a.agent_id);
        Self {
            as_of: snapshot.as_of,
            agents,
        }
    }
}

/// The median of whole microseconds, in microseconds: the middle value, or
/// the mean of the two middle ones (PostgreSQL's `percentile_cont(0.5)`,
/// which gives the same double for values below 2^52).
#[must_use]
pub fn median_micros(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    #[expect(
        clippy::cast_precision_loss,
        reason = "durations in microseconds stay far below 2^52 (142 years)"
    )]
    let median = if values.len() % 2 == 1 {
        values[mid] as f64
    } else {
        let (a, b) = (values[mid - 1] as f64, values[mid] as f64);
        a + (b - a) * 0.5
    };
    Some(median)
}

/// Microseconds as seconds, as the API reports a median.
#[must_use]
pub fn micros_to_seconds(micros: f64) -> f64 {
    micros / 1_000_000.0
}

/// Events of one kind, direction and metadata channel on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount {
    /// The UTC day they occurred.
    pub day: NaiveDate,
    /// Their kind.
    pub kind: EventKind,
    /// Their direction.
    pub direction: Direction,
    /// The channel their metadata names, when it names a known one.
    pub channel: Option<Channel>,
    /// How many.
    pub events: u64,
}

/// The channel an event counts under: the one its metadata names, else the
/// one its kind implies (`meeting` for a meeting, `other` for notes, status
/// moves and imports).
#[must_use]
pub const fn activity_channel(kind: EventKind, named: Option<Channel>) -> &'static str {
    if let Some(channel) = named {
        return channel.as_str();
    }
    match kind {
        EventKind::EmailSent
        | EventKind::EmailReceived
        | EventKind::EmailDelivered
        | EventKind::EmailBounced => "email",
        EventKind::SmsSent | EventKind::SmsReceived => "sms",
        EventKind::Call => "call",
        EventKind::Meeting => "meeting",
        EventKind::Note
        | EventKind::StatusChanged
        | EventKind::ApprovalDecided
        | EventKind::DeliveryFailed
        | EventKind::Imported
        | EventKind::MessageDelivered => "other",
    }
}

/// Events of one channel and direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivityCount {
    /// The channel ([`activity_channel`]).
    pub channel: &'static str,
    /// The direction.
    pub direction: Direction,
    /// How many events.
    pub events: u64,
}

/// One bucket of activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivityBucket {
    /// Its first day.
    pub start: NaiveDate,
    /// Its counts, by channel then direction; only those above zero.
    pub counts: Vec<ActivityCount>,
}

/// `GET /v1/analytics/activity`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// When the figures were taken.
    pub as_of: DateTime<Utc>,
    /// The first day counted.
    pub from: NaiveDate,
    /// The last day counted.
    pub to: NaiveDate,
    /// The bucket size.
    pub interval: Interval,
    /// Counts over the whole range.
    pub totals: Vec<ActivityCount>,
    /// Counts per bucket.
    pub intervals: Vec<ActivityBucket>,
}

type Tally = BTreeMap<(&'static str, &'static str), (Direction, u64)>;

fn counts(tally: &Tally) -> Vec<ActivityCount> {
    tally
        .iter()
        .map(|((channel, _), (direction, events))| ActivityCount {
            channel,
            direction: *direction,
            events: *events,
        })
        .collect()
}

impl Activity {
    /// The activity of `range` by `interval`, from the store's daily counts
    /// (rows outside the range are ignored).
    #[must_use]
    pub fn build(
        range: DateRange,
        interval: Interval,
        snapshot: Snapshot<Vec<EventCount>>,
    ) -> Self {
        let mut total = Tally::new();
        let mut per: BTreeMap<NaiveDate, Tally> = range
            .buckets(interval)
            .into_iter()
            .map(|b| (b, Tally::new()))
            .collect();
        for row in snapshot.rows.iter().filter(|r| range.contains(r.day)) {
            let key = (
                activity_channel(row.kind, row.channel),
                row.direction.as_str(),
            );
            total.entry(key).or_insert((row.direction, 0)).1 += row.events;
            per.entry(interval.bucket_of(row.day))
                .or_default()
                .entry(key)
                .or_insert((row.direction, 0))
                .1 += row.events;
        }
        Self {
            as_of: snapshot.as_of,
            from: range.from,
            to: range.to,
            interval,
            totals: counts(&total),
            intervals: per
                .iter()
                .map(|(start, tally)| ActivityBucket {
                    start: *start,
                    counts: counts(tally),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    fn at() -> DateTime<Utc> {
        "2026-12-06T10:00:00Z".parse().expect("a time")
    }

    #[test]
    fn ranges_refuse_backwards_and_endless_spans() {
        assert!(DateRange::new(day("2026-12-02"), day("2026-12-01")).is_err());
        assert!(DateRange::new(day("2016-01-01"), day("2026-12-01")).is_err());
        let one = DateRange::new(day("2026-12-01"), day("2026-12-01")).expect("a range");
        assert_eq!(one.buckets(Interval::Day), vec![day("2026-12-01")]);
        assert_eq!(
            DateRange::ending(day("2026-12-06"), 30).from(),
            day("2026-11-07")
        );
        assert_eq!(
            DateRange::ending(day("0001-01-05"), 30).from(),
            day("0001-01-01")
        );
    }

    #[test]
    fn weeks_start_on_monday_and_cover_partial_ends() {
        // 2026-12-03 is a Thursday; 2026-12-14 a Monday.
        let range = DateRange::new(day("2026-12-03"), day("2026-12-14")).expect("a range");
        assert_eq!(
            range.buckets(Interval::Week),
            vec![day("2026-11-30"), day("2026-12-07"), day("2026-12-14")]
        );
        assert_eq!(
            Interval::Week.bucket_of(day("2026-12-06")),
            day("2026-11-30")
        );
        assert_eq!(
            Interval::Week.bucket_of(day("2026-12-07")),
            day("2026-12-07")
        );
    }

    #[test]
    fn the_funnel_sums_buckets_and_converts_along_the_main_path() {
        let rows = vec![
            StatusEntries {
                day: day("2026-12-01"),
                status: LeadStatus::New,
                entered: 10,
            },
            StatusEntries {
                day: day("2026-12-08"),
                status: LeadStatus::New,
                entered: 10,
            },
            StatusEntries {
                day: day("2026-12-08"),
                status: LeadStatus::Contacted,
                entered: 5,
            },
            StatusEntries {
                day: day("2026-12-09"),
                status: LeadStatus::Qualified,
                entered: 1,
            },
            // Outside the range: ignored.
            StatusEntries {
                day: day("2026-12-20"),
                status: LeadStatus::Won,
                entered: 9,
            },
        ];
        let cohort = |d: &str, from, entered, converted| Cohort {
            day: day(d),
            from,
            entered,
            converted,
        };
        let cohorts = vec![
            cohort("2026-12-01", LeadStatus::New, 10, 4),
            cohort("2026-12-08", LeadStatus::New, 10, 1),
            cohort("2026-12-08", LeadStatus::Contacted, 5, 1),
            // Outside the range: ignored.
            cohort("2026-12-20", LeadStatus::New, 9, 9),
        ];
        let range = DateRange::new(day("2026-12-01"), day("2026-12-10")).expect("a range");
        let rows = FunnelCounts {
            entries: rows,
            cohorts,
        };
        let funnel = Funnel::build(range, Interval::Week, Snapshot { as_of: at(), rows });
        let entered = |s: &[StageCount], status| {
            s.iter()
                .find(|c| c.status == status)
                .expect("listed")
                .entered
        };
        assert_eq!(entered(&funnel.stages, LeadStatus::New), 20);
        assert_eq!(entered(&funnel.stages, LeadStatus::Won), 0);
        assert_eq!(funnel.intervals.len(), 2);
        assert_eq!(
            entered(&funnel.intervals[1].stages, LeadStatus::Contacted),
            5
        );
        assert_eq!(
            (funnel.conversion[0].leads, funnel.conversion[0].converted),
            (20, 5)
        );
        assert_eq!(funnel.conversion[0].rate, Some(0.25));
        assert_eq!(funnel.conversion[1].rate, Some(0.2));
        assert_eq!(funnel.conversion[2].rate, None);
        assert_eq!(next_stage(LeadStatus::Qualified), Some(LeadStatus::Won));
        assert_eq!(next_stage(LeadStatus::Lost), None);
        let empty = Funnel::build(
            range,
            Interval::Day,
            Snapshot {
                as_of: at(),
                rows: FunnelCounts::default(),
            },
        );
        assert_eq!(empty.conversion[0].rate, None);
        assert_eq!(empty.intervals.len(), 10);
    }

    #[test]
    fn medians_match_percentile_cont() {
        assert_eq!(median_micros(&mut []), None);
        assert_eq!(median_micros(&mut [5]), Some(5.0));
        assert_eq!(median_micros(&mut [9, 1, 4]), Some(4.0));
        assert_eq!(median_micros(&mut [1, 4, 2, 3]), Some(2.5));
        assert_eq!(micros_to_seconds(1_500_000.0), 1.5);
    }

    #[test]
    fn an_event_counts_under_its_named_channel_else_its_kinds() {
        assert_eq!(
            activity_channel(EventKind::Note, Some(Channel::Linkedin)),
            "linkedin"
        );
        assert_eq!(activity_channel(EventKind::EmailBounced, None), "email");
        assert_eq!(activity_channel(EventKind::Meeting, None), "meeting");
        assert_eq!(activity_channel(EventKind::StatusChanged, None), "other");
        let rows = vec![
            EventCount {
                day: day("2026-12-01"),
                kind: EventKind::EmailSent,
                direction: Direction::Outbound,
                channel: None,
                events: 2,
            },
            EventCount {
                day: day("2026-12-02"),
                kind: EventKind::EmailDelivered,
                direction: Direction::Outbound,
                channel: Some(Channel::Email),
                events: 3,
            },
        ];
        let range = DateRange::new(day("2026-12-01"), day("2026-12-02")).expect("a range");
        let activity = Activity::build(range, Interval::Day, Snapshot { as_of: at(), rows });
        assert_eq!(
            activity.totals,
            vec![ActivityCount {
                channel: "email",
                direction: Direction::Outbound,
                events: 5
            }]
        );
        assert_eq!(activity.intervals[1].counts[0].events, 3);
    }
}
