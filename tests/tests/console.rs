//! The web console over HTTP, against real `cronfleet coordinator` and `cronfleet worker`
//! processes on PostgreSQL: pages, the form's errors (the API's own words, nothing saved),
//! the list's server-side filters and pages, Run now with the output streamed as
//! server-sent events, CSRF and Origin checks, the Host check of an open console, and the
//! login of one with tokens. The same flows in a real browser are `tests/console/`.

use std::time::Duration;

use cronfleet_e2e::cluster::Cluster;
use reqwest::header::{COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

/// A browser, as far as the console can tell: it keeps the console's cookies and follows
/// no redirect by itself (the tests look at them).
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
}

/// A page: its status, where it redirects, and its HTML.
#[derive(Debug)]
struct Page {
    status: u16,
    location: Option<String>,
    html: String,
}

impl Browser {
    fn new(base: String) -> Browser {
        Browser {
            base,
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn csrf(&self) -> String {
        self.cookies
            .iter()
            .find(|(k, _)| k == "cronfleet_csrf")
            .map(|(_, v)| v.clone())
            .expect("a CSRF cookie: open a page first")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (key, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != key);
            if !value.is_empty() {
                self.cookies.push((key.to_owned(), value.to_owned()));
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        Page {
            status,
            location,
            html: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    /// The page of run `path` once it shows the run succeeded (within 20 s).
    async fn until_succeeded(&mut self, path: &str) -> Page {
        let mut page = self.get(path).await;
        for _ in 0..100 {
            if page.html.contains(">succeeded<") {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            page = self.get(path).await;
        }
        panic!("run {path} did not succeed: {}", page.html);
    }

    /// Sends a form as the console's page would: with this browser's CSRF token.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        form.extend_from_slice(fields);
        self.post_raw(path, &form, None).await
    }

    async fn post_raw(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(form);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let response = request.send().await.unwrap();
        self.keep(response).await
    }
}

/// The text of `html` with the escapes askama writes undone.
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

async fn rest_json(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{base}/api/v1{path}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_defines_lists_runs_and_guards_jobs() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator(
        "c1",
        &[
            "--jaeger-url",
            "http://jaeger.test:16686",
            "--alert-interval",
            "500ms",
            "--alert-no-worker-after",
            "1s",
        ],
    );
    cluster.start_worker("w1", "shell,noop", 4);
    let base = format!("http://{}", cluster.coordinators[0].http);
    let mut browser = Browser::new(base.clone());

    // `/` is the job list; an empty one says so.
    let root = browser.get("/").await;
    assert_eq!(
        (root.status, root.location.as_deref()),
        (303, Some("/jobs"))
    );
    let jobs = browser.get("/jobs").await;
    assert_eq!(jobs.status, 200, "{}", jobs.html);
    assert!(jobs.html.contains("No job matches"), "{}", jobs.html);

    // A bad cron: the API's message next to the field, and nothing saved.
    let bad = [
        ("name", "nightly-report"),
        ("handler", "shell"),
        ("kind", "cron"),
        ("cron", "61 * * * *"),
        ("tz", "Europe/Berlin"),
        ("args", r#"{"script": "echo report for $CRONFLEET_RUN_ID"}"#),
    ];
    let refused = browser.post("/jobs/new", &bad).await;
    assert_eq!(refused.status, 400, "{}", refused.html);
    let (_, api) = rest_json(
        &base,
        reqwest::Method::POST,
        "/jobs",
        Some(json!({"name": "nightly-report", "handler": "shell", "cron": "61 * * * *", "tz": "Europe/Berlin"})),
    )
    .await;
    let api_message = api["error"]["message"]
        .as_str()
        .expect("the API refuses it too");
    assert_eq!(api["error"]["field"], "cron");
    let html = unescape(&refused.html);
    assert!(
        html.contains(&format!(
            "id=\"cron-error\" class=\"field-error\" role=\"alert\">{api_message}<"
        )),
        "the API's message {api_message:?} next to the cron field: {html}"
    );
    assert!(
        html.contains("value=\"61 * * * *\""),
        "the form keeps what was typed"
    );
    let (status, _) = rest_json(&base, reqwest::Method::GET, "/jobs/nightly-report", None).await;
    assert_eq!(status, 404, "a refused form saves nothing");
    // Fields the form reads itself say what they expect.
    let not_json = browser
        .post(
            "/jobs/new",
            &[
                ("name", "x"),
                ("handler", "noop"),
                ("kind", "every"),
                ("every", "1h"),
                ("args", "{oops"),
            ],
        )
        .await;
    assert_eq!(not_json.status, 422);
    assert!(
        not_json.html.contains("args: not JSON"),
        "{}",
        not_json.html
    );

    // Fixed, it is created and shown.
    let mut fixed = bad;
    fixed[3] = ("cron", "0 3 * * *");
    let created = browser.post("/jobs/new", &fixed).await;
    assert_eq!(
        (created.status, created.location.as_deref()),
        (303, Some("/jobs/nightly-report")),
        "{}",
        created.html
    );
    let job = browser.get("/jobs/nightly-report").await;
    assert!(
        job.html.contains("cron 0 3 * * * (Europe/Berlin)"),
        "{}",
        job.html
    );
    let list = browser.get("/jobs?q=NIGHTLY").await;
    assert!(
        list.html.contains("href=\"/jobs/nightly-report\""),
        "{}",
        list.html
    );

    // Run now: the run's page, which shows the output once the worker is done.
    let run = browser.post("/jobs/nightly-report/run", &[]).await;
    assert_eq!(run.status, 303);
    let run_page = run.location.expect("to the run's page");
    let id: i64 = run_page.trim_start_matches("/runs/").parse().unwrap();
    let page = browser.until_succeeded(&run_page).await;
    assert!(
        page.html.contains(&format!("report for {id}")),
        "{}",
        page.html
    );
    assert!(page.html.contains("manual"), "the trigger");
    // The runs list filters by trigger.
    let manual = browser.get("/runs?trigger=manual").await;
    assert!(
        manual.html.contains(&format!("href=\"/runs/{id}\"")),
        "{}",
        manual.html
    );
    let retries = browser.get("/runs?trigger=retry").await;
    assert!(!retries.html.contains(&format!("href=\"/runs/{id}\"")));
    let bad_trigger = browser.get("/runs?trigger=sometimes").await;
    assert_eq!(bad_trigger.status, 400);
    assert!(unescape(&bad_trigger.html).contains("unknown trigger \"sometimes\""));
    // A time range: the run is in the one that holds its creation, not in one before.
    let before = browser
        .get("/runs?trigger=manual&until=2000-01-01T00:00:00Z")
        .await;
    assert!(!before.html.contains(&format!("href=\"/runs/{id}\"")));
    let around = browser
        .get("/runs?trigger=manual&since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z")
        .await;
    assert!(
        around.html.contains(&format!("href=\"/runs/{id}\"")),
        "{}",
        around.html
    );
    let bad_until = browser.get("/runs?until=yesterday").await;
    assert_eq!(bad_until.status, 400);
    assert!(bad_until.html.contains("until:"), "{}", bad_until.html);

    // A running run's output as server-sent events, ending with its state.
    let (status, _) = rest_json(
        &base,
        reqwest::Method::POST,
        "/jobs",
        Some(json!({"name": "slow", "handler": "shell", "every": "1d", "start": "2030-01-01T00:00:00Z",
                    "args": {"script": "echo first; sleep 1; echo second"}})),
    )
    .await;
    assert_eq!(status, 201);
    let started = browser.post("/jobs/slow/run", &[]).await;
    let slow_id = started
        .location
        .unwrap()
        .trim_start_matches("/runs/")
        .to_owned();
    let events = reqwest::Client::new()
        .get(format!("{base}/runs/{slow_id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let stream = tokio::time::timeout(Duration::from_secs(30), events.text())
        .await
        .expect("the stream ends with the run")
        .expect("the stream reads");
    assert!(stream.contains("event: output\ndata: first"), "{stream}");
    assert!(stream.contains("data: second"), "{stream}");
    assert!(
        stream.trim_end().ends_with("event: end\ndata: succeeded"),
        "{stream}"
    );

    // Pause with a note and resume.
    let paused = browser
        .post("/jobs/slow/pause", &[("note", "maintenance window")])
        .await;
    assert_eq!(paused.status, 303);
    let shown = browser.get("/jobs?status=paused").await;
    assert!(
        shown.html.contains("href=\"/jobs/slow\"") && shown.html.contains("maintenance window")
    );
    browser.post("/jobs/slow/resume", &[]).await;
    let active = browser.get("/jobs?status=paused").await;
    assert!(!active.html.contains("href=\"/jobs/slow\""));

    // Many jobs: pages of 50, counted by the store; a bad filter says what is valid.
    for i in 0..60 {
        let (status, _) = rest_json(
            &base,
            reqwest::Method::POST,
            "/jobs",
            Some(json!({"name": format!("bulk-{i:03}"), "handler": "noop", "every": "1d", "start": "2030-01-01T00:00:00Z", "labels": {"team": if i % 2 == 0 { "ops" } else { "data" }}})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let first = browser.get("/jobs?q=bulk").await;
    assert!(first.html.contains("1–50 of 60"), "{}", first.html);
    assert!(
        unescape(&first.html).contains("href=\"/jobs?q=bulk&page=2\""),
        "{}",
        first.html
    );
    let second = browser.get("/jobs?q=bulk&page=2").await;
    assert!(second.html.contains("51–60 of 60") && second.html.contains("bulk-059"));
    let ops = browser
        .get("/jobs?label=team%3Dops&sort=name&order=desc")
        .await;
    assert!(ops.html.contains("1–30 of 30"), "{}", ops.html);
    let (first_at, second_at) = (
        ops.html.find("bulk-058").unwrap(),
        ops.html.find("bulk-056").unwrap(),
    );
    assert!(first_at < second_at, "sorted by name, descending");
    let bad_status = browser.get("/jobs?status=sleeping").await;
    assert_eq!(bad_status.status, 400);
    assert!(
        unescape(&bad_status.html)
            .contains("status: unknown job status \"sleeping\"; valid values are active")
    );

    // Bulk pause of two ticked jobs.
    let bulk = browser
        .post(
            "/jobs/bulk",
            &[
                ("action", "pause"),
                ("job", "bulk-001"),
                ("job", "bulk-002"),
                ("back", "/jobs"),
            ],
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.html);
    let paused = browser.get("/jobs?q=bulk&status=paused").await;
    assert!(paused.html.contains("1–2 of 2"), "{}", paused.html);

    // The schedule preview shows the zone's offsets and marks a DST change.
    let preview = browser
        .get("/jobs/preview?kind=every&every=1mo&start=2027-01-15T12:00:00&tz=Europe/Berlin")
        .await;
    assert!(
        preview.html.contains("2027-01-15 12:00:00 +01:00"),
        "{}",
        preview.html
    );
    assert!(
        preview.html.contains("2027-04-15 12:00:00 +02:00"),
        "{}",
        preview.html
    );
    assert!(
        preview.html.contains("UTC offset changes (DST)"),
        "{}",
        preview.html
    );
    let bad_preview = browser.get("/jobs/preview?kind=cron&cron=nope").await;
    assert!(
        bad_preview.html.contains("data-field=\"cron\""),
        "{}",
        bad_preview.html
    );

    // Cluster: the worker and its handlers.
    let cluster_page = browser.get("/cluster").await;
    assert!(
        cluster_page.html.contains("w1") && cluster_page.html.contains("noop, shell"),
        "{}",
        cluster_page.html
    );

    // Drain the only worker: a run now waits, and runs once the drain is undone.
    let drained = browser.post("/cluster/workers/w1/drain", &[]).await;
    assert_eq!(
        (drained.status, drained.location.as_deref()),
        (303, Some("/cluster"))
    );
    let cluster_page = browser.get("/cluster").await;
    assert!(
        cluster_page.html.contains(">draining<") && cluster_page.html.contains(">Resume</button>"),
        "{}",
        cluster_page.html
    );
    let waiting = browser.post("/jobs/nightly-report/run", &[]).await;
    let waiting_page = waiting.location.expect("to the run's page");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let page = browser.get(&waiting_page).await;
    assert!(
        page.html.contains(">pending<"),
        "a drained worker gets no run: {}",
        page.html
    );
    // The no_worker alert fires once the run waited past --alert-no-worker-after, and the
    // banner spells it out.
    let mut page = browser.get(&waiting_page).await;
    for _ in 0..100 {
        if unescape(&page.html)
            .contains("no live worker offers handler \"shell\": 1 run is waiting")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        page = browser.get(&waiting_page).await;
    }
    assert!(
        unescape(&page.html).contains("no live worker offers handler \"shell\": 1 run is waiting"),
        "the banner says why: {}",
        page.html
    );
    let unknown = browser.post("/cluster/workers/nobody/drain", &[]).await;
    assert_eq!(unknown.status, 404, "{}", unknown.html);
    let resumed = browser
        .post("/cluster/workers/w1/drain", &[("undo", "on")])
        .await;
    assert_eq!(resumed.status, 303);
    browser.until_succeeded(&waiting_page).await;

    // Delete asks first, then deletes.
    let confirm = browser.get("/jobs/bulk-000/delete").await;
    assert!(confirm.html.contains("Delete bulk-000?"));
    let deleted = browser.post("/jobs/bulk-000/delete", &[]).await;
    assert_eq!(
        (deleted.status, deleted.location.as_deref()),
        (303, Some("/jobs"))
    );
    let (status, _) = rest_json(&base, reqwest::Method::GET, "/jobs/bulk-000", None).await;
    assert_eq!(status, 404);

    // A form without this browser's CSRF token, or from another site, is refused.
    let forged = browser
        .post_raw("/jobs/bulk-003/pause", &[("note", "x")], None)
        .await;
    assert_eq!(forged.status, 403, "{}", forged.html);
    let csrf = browser.csrf();
    let cross = browser
        .post_raw(
            "/jobs/bulk-003/pause",
            &[("csrf", &csrf)],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(cross.status, 403, "{}", cross.html);
    let job = browser.get("/jobs/bulk-003").await;
    assert!(
        !job.html.contains("badge status-paused"),
        "nothing was paused"
    );

    // An open console answers only loopback names (DNS rebinding).
    let rebound = reqwest::Client::new()
        .get(format!("{base}/jobs"))
        .header(HOST, "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 421);
    let rebound_api = reqwest::Client::new()
        .get(format!("{base}/api/v1/jobs"))
        .header(HOST, "evil.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound_api.status().as_u16(), 421, "the API too");
    // A page elsewhere posting a "simple" request to the open API (no preflight) is
    // refused, by its Origin or by the browser's Sec-Fetch-Site.
    let job = r#"{"name": "planted", "handler": "shell", "every": "1m", "args": {"script": "id"}}"#;
    for (header, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let planted = reqwest::Client::new()
            .post(format!("{base}/api/v1/jobs"))
            .header("content-type", "text/plain")
            .header(header, value)
            .body(job)
            .send()
            .await
            .unwrap();
        assert_eq!(planted.status().as_u16(), 403, "{header}: {value}");
    }
    let (status, _) = rest_json(&base, reqwest::Method::GET, "/jobs/planted", None).await;
    assert_eq!(status, 404, "nothing was planted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_console_with_tokens_asks_for_one() {
    const TOKEN: &str = "console-token-4b1e";
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &["--api-token", TOKEN]);
    let base = format!("http://{}", cluster.coordinators[0].http);
    let mut browser = Browser::new(base.clone());

    let jobs = browser.get("/jobs?status=active").await;
    assert_eq!(jobs.status, 303);
    assert_eq!(
        jobs.location.as_deref(),
        Some("/login?next=%2Fjobs%3Fstatus%3Dactive")
    );
    let login = browser.get("/login?next=%2Fjobs%3Fstatus%3Dactive").await;
    assert!(login.html.contains("API token"));
    let wrong = browser
        .post("/login", &[("token", "guess"), ("next", "/jobs")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.html.contains("not one of this coordinator"));
    let refused = browser.post("/jobs/new", &[("name", "x")]).await;
    assert_eq!(refused.status, 401, "a form needs a session too");

    let right = browser
        .post(
            "/login",
            &[("token", TOKEN), ("next", "/jobs?status=active")],
        )
        .await;
    assert_eq!(
        (right.status, right.location.as_deref()),
        (303, Some("/jobs?status=active"))
    );
    let jobs = browser.get("/jobs?status=active").await;
    assert_eq!(jobs.status, 200, "{}", jobs.html);
    assert!(jobs.html.contains("Sign out"));
    assert!(!jobs.html.contains(TOKEN), "the token is never in a page");
    let session = browser
        .cookies
        .iter()
        .find(|(key, _)| key == "cronfleet_session")
        .map(|(_, value)| value.clone())
        .expect("a session cookie");
    let hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !session.contains(TOKEN) && !session.contains(&hex),
        "the session is not the token: {session}"
    );
    // With tokens, any Host is served (behind a load balancer), the token guards it.
    let elsewhere = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/jobs"))
        .header(HOST, "cronfleet.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status().as_u16(),
        303,
        "to the login page, not refused"
    );

    let out = browser.post("/logout", &[]).await;
    assert_eq!(out.location.as_deref(), Some("/login"));
    assert_eq!(browser.get("/jobs").await.status, 303, "signed out");
}
