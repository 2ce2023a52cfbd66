//! [`JobQuery`]: one page of the job list, searched, filtered and sorted by the database
//! (the web console's Jobs page), never in memory: the first page by name and the paused
//! and failing filters (partial indexes) read only their page; a name search, the handler
//! and label filters, sorts on other columns and deep pages scan what they select.
//!
//! Both back-ends build the same SQL here; only the label filter and the case-insensitive
//! match differ between the dialects ([`Dialect`]).

use std::fmt;
use std::str::FromStr;

use cronfleet_core::job::Job;
use cronfleet_core::policy::AUTO_PAUSE_NOTE_PREFIX;
use cronfleet_core::run::{RunState, UnknownName};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use crate::StoreError;
use crate::rows::{ListedJobRow, listed_jobs_from_rows};

/// The SQL condition on `pause_note` of a job the failure-streak rule paused: the prefix
/// compared exactly, as `JobStatus::of` does (SQLite's LIKE ignores case).
pub(crate) fn auto_pause_note_sql() -> String {
    format!(
        "substr(pause_note, 1, {}) = '{}'",
        AUTO_PAUSE_NOTE_PREFIX.chars().count(),
        AUTO_PAUSE_NOTE_PREFIX.replace('\'', "''")
    )
}

/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page a query returns, whatever it asks for.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Which jobs, in which order, which page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// A part of the name, matched without regard to case; `%` and `_` are literal.
    pub search: Option<String>,
    pub status: Option<JobStatus>,
    pub handler: Option<String>,
    pub label: Option<LabelFilter>,
    /// Only jobs whose last run failed (a failure streak of one or more).
    pub failing: bool,
    pub sort: JobSort,
    pub descending: bool,
    /// At most [`MAX_PAGE_SIZE`]; 0 is [`DEFAULT_PAGE_SIZE`].
    pub limit: u32,
    pub offset: u64,
}

impl JobQuery {
    /// The page size this query gets.
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE_SIZE,
            limit => limit.min(MAX_PAGE_SIZE),
        }
    }
}

/// One page of jobs, and how many match in all.
#[derive(Clone, Debug)]
pub struct JobPage {
    pub jobs: Vec<ListedJob>,
    pub total: u64,
}

/// A job as a list shows it: the job and its latest run.
#[derive(Clone, Debug)]
pub struct ListedJob {
    pub job: Job,
    pub last_run: Option<LastRun>,
}

/// A job's latest run, by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastRun {
    pub id: i64,
    pub state: RunState,
}

/// Where a job stands, as the job list shows and filters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Scheduled: its slots are leased as they fall due.
    Active,
    /// Paused by an operator.
    Paused,
    /// Paused by the failure-streak rule.
    AutoPaused,
    /// No slot left: its schedule or its max runs is exhausted.
    Finished,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Active,
        JobStatus::Paused,
        JobStatus::AutoPaused,
        JobStatus::Finished,
    ];

    /// The status of a job with these fields.
    pub fn of(paused: bool, pause_note: Option<&str>, active: bool) -> JobStatus {
        if paused {
            if pause_note.is_some_and(|note| note.starts_with(AUTO_PAUSE_NOTE_PREFIX)) {
                JobStatus::AutoPaused
            } else {
                JobStatus::Paused
            }
        } else if active {
            JobStatus::Active
        } else {
            JobStatus::Finished
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Active => "active",
            JobStatus::Paused => "paused",
            JobStatus::AutoPaused => "auto_paused",
            JobStatus::Finished => "finished",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownName;

    fn from_str(value: &str) -> Result<JobStatus, UnknownName> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| {
                UnknownName::new("job status", value, &JobStatus::ALL.map(JobStatus::as_str))
            })
    }
}

/// Jobs with a label: any value (`key`) or one value (`key=value`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: Option<String>,
}

impl FromStr for LabelFilter {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<LabelFilter, UnknownName> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().to_owned())),
            None => (text.trim(), None),
        };
        if key.is_empty() {
            return Err(UnknownName::new(
                "label filter",
                text,
                &["key", "key=value"],
            ));
        }
        Ok(LabelFilter {
            key: key.to_owned(),
            value,
        })
    }
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// The column a job list is sorted by; ties are broken by name, and jobs without a value
/// (never run, no next slot) come last in either direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JobSort {
    #[default]
    Name,
    Handler,
    NextRun,
    LastRun,
    Failures,
    Priority,
}

impl JobSort {
    pub const ALL: [JobSort; 6] = [
        JobSort::Name,
        JobSort::Handler,
        JobSort::NextRun,
        JobSort::LastRun,
        JobSort::Failures,
        JobSort::Priority,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobSort::Name => "name",
            JobSort::Handler => "handler",
            JobSort::NextRun => "next_run",
            JobSort::LastRun => "last_run",
            JobSort::Failures => "failures",
            JobSort::Priority => "priority",
        }
    }

    fn column(self) -> &'static str {
        match self {
            JobSort::Name => "name",
            JobSort::Handler => "handler",
            JobSort::NextRun => "next_run_at",
            JobSort::LastRun => "last_run_at",
            JobSort::Failures => "failure_count",
            JobSort::Priority => "priority",
        }
    }
}

impl FromStr for JobSort {
    type Err = UnknownName;

    fn from_str(value: &str) -> Result<JobSort, UnknownName> {
        JobSort::ALL
            .into_iter()
            .find(|sort| sort.as_str() == value)
            .ok_or_else(|| UnknownName::new("sort", value, &JobSort::ALL.map(JobSort::as_str)))
    }
}

/// Where the two back-ends' SQL differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// The select list of a page: the job columns and its latest run (by the
/// `runs_job_history` index, one probe per listed job).
macro_rules! listed_job_columns {
    () => {
        concat!(
            job_columns!(),
            ", (SELECT r.id FROM runs r WHERE r.job_id = jobs.id ORDER BY r.id DESC LIMIT 1) AS last_run_id, \
             (SELECT r.state FROM runs r WHERE r.job_id = jobs.id ORDER BY r.id DESC LIMIT 1) AS last_run_state"
        )
    };
}

/// How many jobs `query` selects, on either back-end.
pub(crate) async fn count_jobs<DB>(
    pool: &Pool<DB>,
    query: &JobQuery,
    dialect: Dialect,
) -> Result<u64, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: Default + IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
{
    let total: i64 = count_query::<DB>(query, dialect)
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(total).unwrap_or_default())
}

/// One page of the jobs `query` selects, and their total, on either back-end. Two
/// statements: the total may be a moment older than the page, as in any list.
pub(crate) async fn list_jobs_page<DB>(
    pool: &Pool<DB>,
    query: &JobQuery,
    dialect: Dialect,
) -> Result<JobPage, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: Default + IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    ListedJobRow: for<'r> FromRow<'r, DB::Row>,
{
    let total = count_jobs(pool, query, dialect).await?;
    let rows: Vec<ListedJobRow> = page_query::<DB>(query, dialect)
        .build_query_as()
        .fetch_all(pool)
        .await?;
    Ok(JobPage {
        jobs: listed_jobs_from_rows(rows)?,
        total,
    })
}

/// `SELECT COUNT(*) FROM jobs WHERE …` for `query`.
fn count_query<DB>(query: &JobQuery, dialect: Dialect) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    let mut builder = QueryBuilder::new("SELECT COUNT(*) FROM jobs");
    push_filters(&mut builder, query, dialect);
    builder
}

/// `SELECT … FROM jobs WHERE … ORDER BY … LIMIT … OFFSET …` for `query`, as
/// [`crate::rows::ListedJobRow`]s.
fn page_query<DB>(query: &JobQuery, dialect: Dialect) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut builder = QueryBuilder::new(concat!("SELECT ", listed_job_columns!(), " FROM jobs"));
    push_filters(&mut builder, query, dialect);
    let direction = if query.descending { "DESC" } else { "ASC" };
    builder.push(" ORDER BY ");
    if query.sort != JobSort::Name {
        builder.push(format_args!(
            "{} {direction} NULLS LAST, ",
            query.sort.column()
        ));
    }
    builder.push(format_args!("name {direction} LIMIT "));
    builder.push_bind(i64::from(query.page_size()));
    builder.push(" OFFSET ");
    builder.push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
    builder
}

fn push_filters<DB>(builder: &mut QueryBuilder<DB>, query: &JobQuery, dialect: Dialect)
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    let mut clause = Clause::default();
    if let Some(search) = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // SQLite's LIKE ignores ASCII case already; PostgreSQL's needs ILIKE.
        let like = match dialect {
            Dialect::Postgres => "ILIKE",
            Dialect::Sqlite => "LIKE",
        };
        clause.next(builder).push(format_args!("name {like} "));
        builder.push_bind(format!("%{}%", escape_like(search)));
        builder.push(" ESCAPE '\\'");
    }
    if let Some(status) = query.status {
        let auto = auto_pause_note_sql();
        clause.next(builder).push(match status {
            JobStatus::Active => "(NOT paused AND active)".to_owned(),
            JobStatus::Finished => "(NOT paused AND NOT active)".to_owned(),
            JobStatus::Paused => format!("(paused AND (pause_note IS NULL OR NOT {auto}))"),
            JobStatus::AutoPaused => format!("(paused AND {auto})"),
        });
    }
    if let Some(handler) = &query.handler {
        clause.next(builder).push("handler = ");
        builder.push_bind(handler.clone());
    }
    if let Some(label) = &query.label {
        clause.next(builder);
        match (dialect, &label.value) {
            (Dialect::Postgres, None) => {
                builder.push("labels ? ");
                builder.push_bind(label.key.clone());
            }
            (Dialect::Postgres, Some(value)) => {
                builder.push("labels ->> ");
                builder.push_bind(label.key.clone());
                builder.push(" = ");
                builder.push_bind(value.clone());
            }
            (Dialect::Sqlite, value) => {
                builder.push("EXISTS (SELECT 1 FROM json_each(jobs.labels) l WHERE l.key = ");
                builder.push_bind(label.key.clone());
                if let Some(value) = value {
                    builder.push(" AND l.value = ");
                    builder.push_bind(value.clone());
                }
                builder.push(")");
            }
        }
    }
    if query.failing {
        clause.next(builder).push("failure_count > 0");
    }
}

/// `WHERE` before the first condition, `AND` before the others.
#[derive(Default)]
struct Clause {
    started: bool,
}

impl Clause {
    fn next<'b, DB: Database>(
        &mut self,
        builder: &'b mut QueryBuilder<DB>,
    ) -> &'b mut QueryBuilder<DB> {
        builder.push(if self.started { " AND " } else { " WHERE " });
        self.started = true;
        builder
    }
}

/// `text` with LIKE's wildcards (and the escape character) taken literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_refuse_with_what_is_valid() {
        assert_eq!("auto_paused".parse(), Ok(JobStatus::AutoPaused));
        assert_eq!("next_run".parse(), Ok(JobSort::NextRun));
        let error = "sleeping".parse::<JobStatus>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown job status \"sleeping\"; valid values are active, paused, auto_paused, finished"
        );
        assert_eq!(
            "team = ops".parse(),
            Ok(LabelFilter {
                key: "team".into(),
                value: Some("ops".into())
            })
        );
        assert_eq!(
            "=x".parse::<LabelFilter>().unwrap_err().what,
            "label filter"
        );
    }

    #[test]
    fn status_follows_pause_note_and_activity() {
        let auto = format!("{AUTO_PAUSE_NOTE_PREFIX} 5 consecutive failures");
        assert_eq!(
            JobStatus::of(true, Some(&auto), true),
            JobStatus::AutoPaused
        );
        assert_eq!(
            JobStatus::of(true, Some("maintenance"), true),
            JobStatus::Paused
        );
        assert_eq!(JobStatus::of(true, None, false), JobStatus::Paused);
        assert_eq!(JobStatus::of(false, None, true), JobStatus::Active);
        assert_eq!(JobStatus::of(false, None, false), JobStatus::Finished);
    }

    #[test]
    fn like_wildcards_are_literal() {
        assert_eq!(escape_like(r"50%_off\x"), r"50\%\_off\\x");
    }

    #[test]
    fn page_size_is_capped() {
        let mut query = JobQuery::default();
        assert_eq!(query.page_size(), DEFAULT_PAGE_SIZE);
        query.limit = 10_000;
        assert_eq!(query.page_size(), MAX_PAGE_SIZE);
    }
}
