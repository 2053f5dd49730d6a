//! The console's pages, as maud templates: escaped by construction, no
//! inline script or style (the Content-Security-Policy forbids both).

use axum::http::StatusCode;
use leadline_domain::{Approval, ApprovalStatus, Event, Lead, User};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

/// One inbox card: an approval and its lead's context (as the context
/// read model renders it; absent if it could not be read).
pub(crate) struct Card {
    pub approval: Approval,
    pub context: Option<Value>,
}

pub(super) fn page(title: &str, user: Option<(&User, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · leadline" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                @if let Some((user, csrf)) = user {
                    header.bar {
                        strong { "leadline" }
                        nav aria-label="Console" {
                            a href="/" { "Inbox" }
                            a href="/leads" { "Leads" }
                            @if user.role.allows(leadline_domain::Scope::LeadsWrite) {
                                a href="/imports" { "Import" }
                            }
                            @if user.role == leadline_domain::Role::Admin {
                                a href="/admin/users" { "Users" }
                                a href="/admin/keys" { "API keys" }
                            }
                        }
                        div.who {
                            span { (user.name) " (" (user.role) ")" }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.secondary type="submit" { "Sign out" }
                            }
                            form method="post" action="/logout/everywhere" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.secondary type="submit" { "Sign out everywhere" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// The sign-in page.
pub(crate) fn login(csrf: &str, problem: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            div.narrow {
                h1 { "Sign in to leadline" }
                @if let Some(problem) = problem {
                    p.flash.bad role="alert" { (problem) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field {
                        label for="workspace" { "Workspace" }
                        input #workspace type="text" name="workspace" autocomplete="organization" required autofocus;
                    }
                    div.field {
                        label for="email" { "Email" }
                        input #email type="email" name="email" autocomplete="username" required;
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required;
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The page a login link opens: choose a password.
pub(crate) fn set_password(token: &str, csrf: &str, problem: Option<&str>) -> Markup {
    page(
        "Choose a password",
        None,
        html! {
            div.narrow {
                h1 { "Choose your password" }
                @if let Some(problem) = problem {
                    p.flash.bad role="alert" { (problem) }
                }
                p { "At least 12 characters. This link works once." }
                form method="post" action="/login/link" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="token" value=(token);
                    div.field {
                        label for="password" { "New password" }
                        input #password type="password" name="password" autocomplete="new-password" minlength="12" required autofocus;
                    }
                    button type="submit" { "Set password and sign in" }
                }
            }
        },
    )
}

/// A failure, for a browser.
pub(crate) fn error(status: StatusCode, message: &str) -> Markup {
    page(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            div.narrow {
                h1 { (status.as_u16()) " · " (status.canonical_reason().unwrap_or("Error")) }
                p role="alert" { (message) }
                p { a href="/" { "Back to the inbox" } }
            }
        },
    )
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The approvals inbox.
pub(crate) fn inbox(
    user: &User,
    csrf: &str,
    cards: &[Card],
    may: Powers,
    done: Option<&str>,
    error: Option<&str>,
) -> Markup {
    page(
        "Inbox",
        Some((user, csrf)),
        html! {
            h1 { "Approvals" }
            @if let Some(done) = done {
                p.flash.ok role="status" { (done) }
            }
            @if let Some(error) = error {
                p.flash.bad role="alert" { (error) }
            }
            p #live.flash role="status" aria-live="polite" {}
            @if may.decide {
                p.keys {
                    "Keys: " kbd { "j" } "/" kbd { "k" } " next/previous, "
                    kbd { "a" } " approve, " kbd { "r" } " reject (type the reason), "
                    kbd { "s" } " send."
                }
            } @else {
                p.keys { "You can read the inbox; deciding needs the approver role." }
            }
            @if cards.is_empty() {
                p.empty { "Nothing waits for a decision." }
            }
            div.cards data-inbox {
                @for card in cards {
                    (card_markup(card, csrf, may))
                }
            }
        },
    )
}

/// What the signed-in person may do with a card.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Powers {
    /// Approve, reject, send.
    pub decide: bool,
    /// Edit a pending draft.
    pub edit: bool,
}

fn card_markup(card: &Card, csrf: &str, may: Powers) -> Markup {
    let a = &card.approval;
    let id = a.id.to_string();
    let context = card.context.as_ref();
    let lead = context.and_then(|c| c.get("lead"));
    let name = lead
        .map(|l| {
            format!(
                "{} {}",
                text(l, &["first_name"]).unwrap_or_default(),
                text(l, &["last_name"]).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "(lead not readable)".to_owned());
    let events = context
        .and_then(|c| c.get("events"))
        .and_then(Value::as_array)
        .map(|e| e.iter().take(3).collect::<Vec<_>>())
        .unwrap_or_default();
    let heading = format!("card-{id}");
    html! {
        article.card data-approval=(id) data-status=(a.status.as_str()) data-revision=(a.revision) aria-labelledby=(heading) {
            div {
                h2 #(heading) { (a.channel.as_str()) " to " (name) }
                p.meta {
                    (a.status.as_str()) " · drafted " (a.created_at.format("%Y-%m-%d %H:%M UTC"))
                }
                @if let Some(subject) = &a.subject {
                    p { strong { "Subject: " } (subject.as_str()) }
                }
                p.body { (a.body.as_str()) }
                @if a.revision > 1 {
                    p.meta { "edited · revision " (a.revision) }
                }
                p data-note role="status" {}
                @if may.edit && a.status == ApprovalStatus::Pending {
                    details.edit {
                        summary { "Edit the draft" }
                        form method="post" action={ "/approvals/" (id) "/edit" } {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="revision" value=(a.revision);
                            div {
                                label for={ "subject-" (id) } { "Subject" }
                                input id={ "subject-" (id) } type="text" name="subject" maxlength="300"
                                    value=(a.subject.as_ref().map_or("", |s| s.as_str()));
                            }
                            div {
                                label for={ "body-" (id) } { "Message" }
                                textarea id={ "body-" (id) } name="body" required rows="6" maxlength="20000" { (a.body.as_str()) }
                            }
                            button type="submit" data-action="edit" { "Save the edit" }
                        }
                    }
                }
                @if may.decide {
                    div.actions {
                        @if a.status == ApprovalStatus::Pending {
                            form method="post" action={ "/approvals/" (id) "/approve" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="revision" value=(a.revision);
                                button type="submit" data-action="approve" { "Approve" }
                            }
                            form method="post" action={ "/approvals/" (id) "/reject" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="revision" value=(a.revision);
                                div {
                                    label for={ "reason-" (id) } { "Reason" }
                                    input id={ "reason-" (id) } type="text" name="reason" required maxlength="500";
                                }
                                button.danger type="submit" data-action="reject" { "Reject" }
                            }
                        }
                        @if a.status == ApprovalStatus::Approved {
                            form method="post" action={ "/approvals/" (id) "/send" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" data-action="send" { "Send" }
                            }
                        }
                    }
                }
            }
            aside aria-label="Lead" {
                h3 { (name) }
                @if let Some(lead) = lead {
                    @if let Some(company) = text(lead, &["company"]) {
                        p { (company) }
                    }
                    @if let Some(email) = text(lead, &["email"]) {
                        p { (email) }
                    }
                    @if let Some(status) = text(lead, &["status"]) {
                        p { "Status: " (status) }
                    }
                }
                h3 { "Last touches" }
                @if events.is_empty() {
                    p.empty { "None yet." }
                } @else {
                    ul {
                        @for event in events {
                            li {
                                (text(event, &["kind"]).unwrap_or("event"))
                                @if let Some(at) = text(event, &["occurred_at"]) {
                                    " · " (at.get(..10).unwrap_or(at))
                                }
                                @if let Some(content) = text(event, &["content"]) {
                                    ": " (content.chars().take(80).collect::<String>())
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The filters of the leads page, as typed.
pub(crate) struct LeadFilters {
    pub q: Option<String>,
    pub status: Option<String>,
    pub tag: Option<String>,
}

/// Lead search and list.
pub(crate) fn leads(
    user: &User,
    csrf: &str,
    filters: &LeadFilters,
    leads: &[Lead],
    next: Option<leadline_domain::LeadId>,
    problem: Option<&str>,
) -> Markup {
    let statuses = ["", "new", "contacted", "qualified", "won", "lost"];
    page(
        "Leads",
        Some((user, csrf)),
        html! {
            h1 { "Leads" }
            form.filters method="get" action="/leads" role="search" {
                div.field {
                    label for="q" { "Search" }
                    input #q type="search" name="q" value=(filters.q.as_deref().unwrap_or_default()) placeholder="name, email, company, phone";
                }
                div.field {
                    label for="status" { "Status" }
                    select #status name="status" {
                        @for option in statuses {
                            option value=(option) selected[filters.status.as_deref().unwrap_or_default() == option] {
                                @if option.is_empty() { "any" } @else { (option) }
                            }
                        }
                    }
                }
                div.field {
                    label for="tag" { "Tag" }
                    input #tag type="text" name="tag" value=(filters.tag.as_deref().unwrap_or_default());
                }
                button type="submit" { "Find" }
            }
            @if let Some(problem) = problem {
                p.flash.bad role="alert" { (problem) }
            }
            @if leads.is_empty() {
                p.empty { "No lead matches." }
            } @else {
                table {
                    caption.skip { "Leads" }
                    thead {
                        tr { th scope="col" { "Name" } th scope="col" { "Company" } th scope="col" { "Email" } th scope="col" { "Status" } th scope="col" { "Tags" } }
                    }
                    tbody {
                        @for lead in leads {
                            tr {
                                td { a href={ "/leads/" (lead.id) } { (lead.first_name) " " (lead.last_name) } }
                                td { (lead.company.as_ref().map(ToString::to_string).unwrap_or_default()) }
                                td { (lead.email.as_ref().map(ToString::to_string).unwrap_or_default()) }
                                td { (lead.status.as_str()) }
                                td { (lead.tags.as_slice().iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p {
                    a href={ "/leads?after=" (next)
                        @if let Some(status) = &filters.status { "&status=" (status) }
                        @if let Some(tag) = &filters.tag { "&tag=" (tag) }
                    } { "Older leads" }
                }
            }
        },
    )
}

/// A lead and its timeline.
pub(crate) fn lead(user: &User, csrf: &str, lead: &Lead, events: &[Event]) -> Markup {
    let name = format!("{} {}", lead.first_name, lead.last_name);
    page(
        &name,
        Some((user, csrf)),
        html! {
            p { a href="/leads" { "All leads" } }
            h1 { (name) }
            dl.facts {
                @if let Some(company) = &lead.company { dt { "Company" } dd { (company) } }
                @if let Some(email) = &lead.email { dt { "Email" } dd { (email) } }
                @if let Some(phone) = &lead.phone { dt { "Phone" } dd { (phone.as_str()) } }
                dt { "Status" } dd { (lead.status.as_str()) }
                dt { "Created" } dd { (lead.created_at.format("%Y-%m-%d %H:%M UTC")) }
            }
            h2 { "Timeline" }
            @if events.is_empty() {
                p.empty { "Nothing has happened yet." }
            } @else {
                ol.timeline {
                    @for event in events {
                        li {
                            strong { (event.kind.as_str()) }
                            " · " (event.direction.as_str())
                            " · " time datetime=(event.occurred_at.to_rfc3339()) { (event.occurred_at.format("%Y-%m-%d %H:%M UTC")) }
                            @if let Some(content) = &event.content {
                                p { (content.as_str()) }
                            }
                        }
                    }
                }
            }
        },
    )
}
