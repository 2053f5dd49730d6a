//! The console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`; `.ci/run` installs them)
//! against the real `leadline serve` binary on the embedded default.
//!
//! A person follows their login link, chooses a password, approves and
//! sends a message; a second person edits a draft, the first person's open
//! inbox marks it, and approving the old text is refused; the second
//! person's inbox marks the card the first then decided, and acting on it
//! anyway says who won; an agent is refused the admin page; an admin
//! invites a user, disables one (whose session ends), and issues and
//! revokes an API key in the browser; a CSV import shows its rejected row. With `LEADLINE_SCREENSHOTS=<dir>` the main pages are saved
//! there as PNGs (how docs/console-*.png were made).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{BIN, Running};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn leadline(db: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("LEADLINE_HTTP__BIND", "127.0.0.1:0")
        .env("LEADLINE_RECALL__PRELOAD_ON_START", "false");
    cmd
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "the console's browser tests need Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver; .ci/run does)"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver, width: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},900")],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// Waits until the page's HTML contains `needle`.
async fn until_page_has(client: &Client, needle: &str) -> String {
    until_page(client, needle, |source| source.contains(needle)).await
}

/// Waits until the page's HTML satisfies `ready`, which must tell the page
/// wanted from the one before it (a navigation is not over when the
/// WebDriver call that started it returns).
async fn until_page(client: &Client, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let source = client.source().await.unwrap();
        if ready(&source) {
            return source;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; it is:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(client: &Client, name: &str, shots: bool) {
    if let Some(dir) = std::env::var_os("LEADLINE_SCREENSHOTS").filter(|_| shots) {
        let png = client.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

/// Follows a login link, chooses a password, lands on the inbox.
async fn sign_in_by_link(client: &Client, link: &str) {
    client.goto(link).await.unwrap();
    until_page_has(client, "Choose your password").await;
    let form = client.form(Locator::Css("form")).await.unwrap();
    form.set_by_name("password", "a long and good password")
        .await
        .unwrap();
    form.submit().await.unwrap();
    until_page_has(client, "<h1>Approvals</h1>").await;
}

/// The API, as the tenant's admin key.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn draft(&self, agent: &str, who: &str) -> String {
        let lead = self
            .post(
                "/v1/leads",
                json!({"first_name": who, "last_name": "Hopper", "email": format!("{}@navy.example", who.to_lowercase()), "company": "US Navy"}),
            )
            .await;
        let lead = lead["id"].as_str().unwrap();
        self.post(
            &format!("/v1/leads/{lead}/events"),
            json!({"kind": "call", "direction": "inbound", "content": format!("{who} called back: interested")}),
        )
        .await;
        let approval = self
            .post(
                &format!("/v1/leads/{lead}/approvals"),
                json!({"channel": "email", "subject": "Following up", "body": format!("Hello {who}, shall we talk on Tuesday?"), "requested_by": agent}),
            )
            .await;
        approval["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_approve_and_send_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("console.db").display()
    );
    common::migrate_up(&db);
    console_flow(&db, None, &dir, true).await;
}

/// The same on the production store: PostgreSQL, with console sessions in
/// Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_approve_and_send_in_the_console_on_postgres_with_sessions_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = leadline_testsupport::postgres();
    let database = server
        .create_database("leadline_console", None)
        .await
        .expect("create a database");
    let url = server.admin_url(&database);
    common::migrate_up(&url);
    let redis = leadline_testsupport::redis().url();
    console_flow(&url, Some(&redis), &dir, false).await;
}

/// The whole walk through the console against `leadline serve` on `db`
/// (sessions in `redis` when given); `shots`: save the screenshots.
async fn console_flow(db: &str, redis: Option<&str>, dir: &tempfile::TempDir, shots: bool) {
    let driver = chromedriver();
    let db = db.to_owned();
    let key = stdout_of(leadline(&db).args(["tenant", "create", "acme"]));
    let server = Running::start({
        let mut cmd = leadline(&db);
        if let Some(redis) = redis {
            cmd.env("LEADLINE_CACHE__REDIS_URL", redis);
        }
        cmd.arg("serve");
        cmd
    });
    let seen = server.wait_for_line("listening on", Duration::from_secs(30));
    let addr = seen
        .iter()
        .find_map(|l| l.split("listening on http://").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    // `localhost`: a browser keeps `Secure` cookies for it over plain HTTP.
    let base = format!("http://localhost:{}", addr.rsplit(':').next().unwrap());
    let invite = |email: &str, role: &str| {
        stdout_of(leadline(&db).args([
            "users", "invite", "--tenant", "acme", "--email", email, "--role", role, "--url", &base,
        ]))
    };
    let ada = invite("ada@acme.example", "approver");
    let bob = invite("bob@acme.example", "approver");
    let carl = invite("carl@acme.example", "agent");
    let root = invite("root@acme.example", "admin");

    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        key,
    };
    let drafter = api
        .post(
            "/v1/agents",
            json!({"name": "Dee Drafter", "email": "dee@acme.example"}),
        )
        .await;
    let drafter = drafter["id"].as_str().unwrap().to_owned();
    let first = api.draft(&drafter, "Grace").await;
    let second = api.draft(&drafter, "Alan").await;

    // Ada signs in with her link and approves, then sends, the first.
    let a = browser(&driver, 1280).await;
    sign_in_by_link(&a, &ada).await;
    if let Some(redis) = redis {
        // The session is in Redis, under the tenant's hash tag.
        let tenant = api.get("/v1/tenant").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut conn = redis::Client::open(redis)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("leadline:{{{tenant}}}:session:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "Ada's session, in Redis: {keys:?}");
    }
    let page = until_page_has(&a, &first).await;
    assert!(
        page.contains("Grace Hopper") && page.contains("US Navy"),
        "the lead beside the draft"
    );
    assert!(page.contains("Grace called back"), "its last touches");
    screenshot(&a, "console-inbox.png", shots).await;
    // Bob's inbox is open meanwhile, on a phone-width screen.
    let b = browser(&driver, 390).await;
    sign_in_by_link(&b, &bob).await;
    until_page_has(&b, &second).await;

    a.find(Locator::Css(&format!(
        "[data-approval='{first}'] [data-action=approve]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until_page_has(&a, "Message approved.").await;
    a.find(Locator::Css(&format!(
        "[data-approval='{first}'] [data-action=send]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until_page_has(&a, "Message sent.").await;
    assert_eq!(
        api.get(&format!("/v1/approvals/{first}")).await["status"],
        "sent"
    );

    // Bob edits the second draft before anyone decides it, on his phone.
    b.find(Locator::Css(&format!(
        "[data-approval='{second}'] details.edit summary"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let edit = b
        .form(Locator::Css(&format!(
            "[data-approval='{second}'] form[action$='/edit']"
        )))
        .await
        .unwrap();
    edit.set_by_name("body", "Hello Alan, shall we talk on Wednesday?")
        .await
        .unwrap();
    edit.submit().await.unwrap();
    until_page_has(&b, "Draft edited.").await;
    until_page_has(&b, "edited · revision 2").await;

    // Ada's open card for it is marked within a few seconds, without a
    // reload; approving the text she read anyway is refused.
    let stale = format!("[data-approval='{second}'].stale");
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.find(Locator::Css(&stale)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "Ada's inbox never marked the edited card"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.execute(
        &format!("document.querySelector(\"[data-approval='{second}'] form[action$='/approve']\").submit()"),
        vec![],
    )
    .await
    .unwrap();
    until_page_has(&a, "the draft was edited since you read it").await;
    assert_eq!(
        api.get(&format!("/v1/approvals/{second}")).await["status"],
        "pending"
    );
    // Reloaded (the redirect did), she reads the new text and approves it.
    until_page_has(&a, "shall we talk on Wednesday?").await;
    a.find(Locator::Css(&format!(
        "[data-approval='{second}'] [data-action=approve]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until_page_has(&a, "Message approved.").await;
    let approved = api.get(&format!("/v1/approvals/{second}")).await;
    assert_eq!(
        (
            &approved["status"],
            &approved["revision"],
            &approved["body"]
        ),
        (
            &json!("approved"),
            &json!(2),
            &json!("Hello Alan, shall we talk on Wednesday?")
        )
    );

    // Bob's card for it is marked decided in turn, without a reload.
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.find(Locator::Css(&stale)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "Bob's inbox never marked the decided card"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&b, "console-inbox-phone.png", shots).await;
    // Acting on it anyway (the form, submitted past its disabled button)
    // says who won.
    b.execute(
        &format!("document.querySelector(\"[data-approval='{second}'] form[action$='/approve']\").submit()"),
        vec![],
    )
    .await
    .unwrap();
    until_page_has(
        &b,
        "Not done: this message was approved already, by ada@acme.example",
    )
    .await;

    // Carl is an agent: he reads the inbox but gets no admin page.
    let c = browser(&driver, 1280).await;
    sign_in_by_link(&c, &carl).await;
    let inbox = c.source().await.unwrap();
    assert!(
        inbox.contains("deciding needs the approver role"),
        "{inbox}"
    );
    assert!(
        !inbox.contains("data-action=\"approve\""),
        "no buttons for an agent"
    );
    c.goto(&format!("{base}/admin/keys")).await.unwrap();
    until_page_has(&c, "API keys are for admins").await;
    // He finds a lead by words of its name and company and reads its
    // timeline.
    c.goto(&format!("{base}/leads")).await.unwrap();
    until_page_has(&c, "<h1>Leads</h1>").await;
    let search = c.form(Locator::Css("form.filters")).await.unwrap();
    search.set_by_name("q", "grace navy").await.unwrap();
    search.submit().await.unwrap();
    // The unfiltered list holds both leads; the filtered one only Grace.
    until_page(&c, "only Grace Hopper", |page| {
        page.contains("Grace Hopper</a>") && !page.contains("Alan Hopper</a>")
    })
    .await;
    screenshot(&c, "console-leads.png", shots).await;
    c.find(Locator::LinkText("Grace Hopper"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_page_has(&c, "<h2>Timeline</h2>").await;
    until_page_has(&c, "Grace called back: interested").await;

    // An admin manages people and keys in the browser.
    let d = browser(&driver, 1280).await;
    sign_in_by_link(&d, &root).await;
    d.goto(&format!("{base}/admin/users")).await.unwrap();
    until_page_has(&d, "<h1>Users</h1>").await;
    let invite_form = d
        .form(Locator::Css("form[action='/admin/users']"))
        .await
        .unwrap();
    invite_form
        .set_by_name("email", "gil@acme.example")
        .await
        .unwrap();
    invite_form.set_by_name("role", "viewer").await.unwrap();
    invite_form.submit().await.unwrap();
    until_page_has(&d, "User invited").await;
    let link = d
        .find(Locator::Css("[data-link]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let page = api.http.get(format!("{base}{link}")).send().await.unwrap();
    assert!(
        page.text().await.unwrap().contains("Choose your password"),
        "the invitation's link works"
    );
    // Disabling Carl ends his session at once.
    let users = api.get("/v1/users").await;
    let carl_id = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "carl@acme.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.goto(&format!("{base}/admin/users")).await.unwrap();
    until_page_has(&d, "gil@acme.example").await;
    screenshot(&d, "console-users.png", shots).await;
    d.find(Locator::Css(&format!(
        "[data-user='{carl_id}'] [data-action=disable]"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    until_page_has(&d, "User changed.").await;
    c.goto(&format!("{base}/")).await.unwrap();
    until_page_has(&c, "Sign in to leadline").await;
    // A key issued in the browser works once copied, and stops when revoked.
    d.goto(&format!("{base}/admin/keys")).await.unwrap();
    until_page_has(&d, "<h1>API keys</h1>").await;
    let issue = d
        .form(Locator::Css("form[action='/admin/keys']"))
        .await
        .unwrap();
    issue.set_by_name("name", "CRM sync").await.unwrap();
    issue.set_by_name("role", "viewer").await.unwrap();
    issue.set_by_name("expires_in_days", "30").await.unwrap();
    issue.submit().await.unwrap();
    until_page_has(&d, "Key issued").await;
    let secret = d
        .find(Locator::Css("[data-secret]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let status_with = async |key: &str| {
        api.http
            .get(format!("{base}/v1/leads"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status_with(&secret).await, 200, "the new key reads");
    let keys = api.get("/v1/keys").await;
    let key_id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "CRM sync")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.goto(&format!("{base}/admin/keys")).await.unwrap();
    until_page_has(&d, "CRM sync").await;
    screenshot(&d, "console-keys.png", shots).await;
    d.find(Locator::Css(&format!("[data-key='{key_id}'] button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_page_has(&d, "Key revoked.").await;
    assert_eq!(status_with(&secret).await, 401, "revoked");
    d.close().await.unwrap();

    // Ada imports a CSV: the good rows become leads, the bad one is shown
    // with its line and column, and can be downloaded to fix.
    let csv = dir.path().join("crm-export.csv");
    std::fs::write(
        &csv,
        "First Name,Last Name,Email,Company\n\
         Ada,Lovelace,ada@engine.example,Analytical\n\
         Charles,Babbage,not-an-email,Analytical\n\
         Mary,Somerville,mary@engine.example,Royal Society\n",
    )
    .unwrap();
    a.goto(&format!("{base}/imports")).await.unwrap();
    until_page_has(&a, "<h1>Import leads</h1>").await;
    // A form posted without the session's token is refused before the
    // file is read.
    let forged = a
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             const form = new FormData();\
             form.append('file', new Blob(['First Name,Last Name\\nEve,X\\n'], {type: 'text/csv'}), 'x.csv');\
             fetch('/imports', {method: 'POST', body: form, headers: {Accept: 'text/html'}}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!(403), "an upload without the CSRF token");
    a.find(Locator::Css("input[type=file]"))
        .await
        .unwrap()
        .send_keys(&csv.display().to_string())
        .await
        .unwrap();
    a.find(Locator::Css("[data-action=import]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let report = until_page_has(&a, "data-import-status=\"done\"").await;
    assert!(report.contains("Import of crm-export.csv"), "{report}");
    for (count, expected) in [("created", 2), ("rejected", 1)] {
        assert!(
            report.contains(&format!("data-count=\"{count}\">{expected}<")),
            "{count}: {report}"
        );
    }
    assert!(
        report.contains("<td>3</td>"),
        "the bad row's line: {report}"
    );
    screenshot(&a, "console-import.png", shots).await;
    let href = a
        .find(Locator::LinkText("Download the rejected rows"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let rejected = a
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0]).then(r => r.text()).then(done);",
            vec![json!(href)],
        )
        .await
        .unwrap();
    let rejected = rejected.as_str().unwrap();
    assert!(
        rejected.contains("not-an-email") && rejected.contains("leadline_errors"),
        "{rejected}"
    );
    let found = api.get("/v1/leads/search?q=somerville").await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");

    // Signing out ends the session: the inbox asks for a sign-in again.
    a.find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_page_has(&a, "Sign in to leadline").await;
    screenshot(&a, "console-login.png", shots).await;
    a.goto(&format!("{base}/")).await.unwrap();
    until_page_has(&a, "Sign in to leadline").await;

    for client in [a, b, c] {
        client.close().await.unwrap();
    }
}
