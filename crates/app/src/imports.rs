//! Importing leads from CSV: the use case behind `leadline import leads`
//! (and, later, `POST /v1/imports`).
//!
//! A file is decoded on a blocking thread ([`CsvSource`]: UTF-8 with or
//! without BOM, `,` `;` or tab detected from the header line, quoted fields
//! with newlines and quotes, CRLF, blank lines, ragged rows) and read in
//! batches. Each row is read with the domain's rules
//! ([`leadline_domain::import`]); its owner is resolved to an agent by email;
//! its email is looked up among the tenant's live leads. Each batch is then
//! committed with the run's position in one transaction, so a killed import
//! resumes after its last batch when the same file is imported again, and a
//! finished one repeats nothing. On PostgreSQL two batches are written at
//! once ([`ImportRepository::concurrent_batches`]); their commits still land
//! in the file's order, each moving the run from where the one before left
//! it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{BufRead, BufReader, Read},
    sync::Arc,
};

use leadline_domain::{
    AgentId, Email, Lead, TenantId,
    import::{
        ColumnError, ColumnMap, ImportBatch, ImportRun, ImportStatus, ImportedLead, MapError,
        OnDuplicate, RejectedRow, Target,
    },
};
use leadline_ports::{
    AgentRepository, ImportError, ImportRepository, LeadRepository, UpdateLeadError,
};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::LeadService;

/// Rows per batch (one transaction each).
pub const BATCH_ROWS: usize = 2000;

/// One record of the file: where it starts and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The line it starts on (1 is the header).
    pub line: u64,
    /// Its fields, or why they could not be decoded.
    pub fields: Result<Vec<String>, String>,
}

/// Why an import stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    /// The file is not CSV this importer can read (no header, unreadable).
    #[error("the file cannot be read: {0}")]
    Unreadable(String),
    /// The mapping does not fit the file.
    #[error(transparent)]
    Mapping(#[from] MapError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ImportError),
}

/// A CSV file being decoded on a blocking thread: its header, then its
/// records in order.
#[derive(Debug)]
pub struct CsvSource {
    /// The header's fields.
    pub headers: Vec<String>,
    /// The records; a read error ends the stream with an `Err`.
    pub records: mpsc::Receiver<Result<Record, String>>,
}

impl CsvSource {
    /// Starts decoding `reader` on a blocking thread.
    ///
    /// # Errors
    /// [`ImportFailure::Unreadable`] when there is no header line.
    pub async fn open(reader: impl Read + Send + 'static) -> Result<Self, ImportFailure> {
        let (header_tx, header_rx) = tokio::sync::oneshot::channel();
        let (tx, records) = mpsc::channel(4 * BATCH_ROWS);
        tokio::task::spawn_blocking(move || decode(reader, header_tx, &tx));
        let headers = header_rx
            .await
            .map_err(|_| ImportFailure::Unreadable("the reader stopped".to_owned()))?
            .map_err(ImportFailure::Unreadable)?;
        Ok(Self { headers, records })
    }
}

/// The delimiter the header line uses most: `,`, `;` or tab.
fn delimiter(head: &[u8]) -> u8 {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    let mut best = (b',', 0);
    for d in [b',', b';', b'\t'] {
        let mut quoted = false;
        let n = line
            .iter()
            .filter(|&&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                !quoted && b == d
            })
            .count();
        if n > best.1 {
            best = (d, n);
        }
    }
    best.0
}

fn decode(
    reader: impl Read,
    header_tx: tokio::sync::oneshot::Sender<Result<Vec<String>, String>>,
    tx: &mpsc::Sender<Result<Record, String>>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let head = match reader.fill_buf() {
        Ok(head) => head,
        Err(e) => {
            let _ = header_tx.send(Err(e.to_string()));
            return;
        }
    };
    let bom = head.starts_with(&[0xEF, 0xBB, 0xBF]);
    let delimiter = delimiter(if bom { &head[3..] } else { head });
    if bom {
        reader.consume(3);
    }
    let newlines = std::rc::Rc::new(std::cell::RefCell::new(Newlines::default()));
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(false)
        .from_reader(Tail {
            inner: reader,
            newlines: newlines.clone(),
        });
    let mut record = csv::ByteRecord::new();
    let mut header_tx = Some(header_tx);
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {
                let fields: Result<Vec<String>, String> = record
                    .iter()
                    .map(|f| {
                        String::from_utf8(f.to_vec())
                            .map_err(|_| "is not valid UTF-8 (save the file as UTF-8)".to_owned())
                    })
                    .collect();
                if let Some(header) = header_tx.take() {
                    let _ = header.send(fields);
                    continue;
                }
                let embedded: u64 = record
                    .iter()
                    .map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64)
                    .sum();
                // The record's last byte is just before where the reader
                // stopped (its terminator, or its first half for CRLF): its
                // last line counts the newlines before that byte, and its
                // first line is as many lines up as it holds newlines.
                let end = csv.position().byte().saturating_sub(1);
                let last_line = newlines.borrow_mut().line_of(end);
                let line = last_line.saturating_sub(embedded).max(2);
                if tx.blocking_send(Ok(Record { line, fields })).is_err() {
                    return;
                }
            }
            Ok(false) => break,
            Err(e) => {
                if let Some(header) = header_tx.take() {
                    let _ = header.send(Err(e.to_string()));
                    return;
                }
                let _ = tx.blocking_send(Err(format!("{e}")));
                return;
            }
        }
    }
    if let Some(header) = header_tx.take() {
        let _ = header.send(Err("the file is empty: it needs a header line".to_owned()));
    }
}

/// Where the newlines of the file are, for line numbers: the reader notes
/// each one's byte offset; offsets before the last record asked about are
/// only counted, so memory stays bounded.
#[derive(Default)]
struct Newlines {
    offsets: std::collections::VecDeque<u64>,
    dropped: u64,
    read: u64,
}

impl Newlines {
    /// The line (from 1) of the byte at `offset`, forgetting what lies
    /// before it (later questions are about later bytes).
    fn line_of(&mut self, offset: u64) -> u64 {
        while self.offsets.front().is_some_and(|&o| o < offset) {
            self.offsets.pop_front();
            self.dropped += 1;
        }
        self.dropped + 1
    }
}

/// A reader that notes where the newlines are.
struct Tail<R> {
    inner: R,
    newlines: std::rc::Rc<std::cell::RefCell<Newlines>>,
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut nl = self.newlines.borrow_mut();
        let base = nl.read;
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            nl.offsets.push_back(base + i as u64);
        }
        nl.read += n as u64;
        Ok(n)
    }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// What to do with a row whose email is already a lead's.
    pub on_duplicate: OnDuplicate,
    /// Explicit header → target mappings, over the guessed ones.
    pub mapping: Vec<(String, Target)>,
}

/// The import use case.
#[derive(Clone)]
pub struct ImportService {
    imports: Arc<dyn ImportRepository>,
    leads: Arc<dyn LeadRepository>,
    agents: Arc<dyn AgentRepository>,
    lead_service: LeadService,
}

impl ImportService {
    /// Wraps the ports; updates go through `lead_service` so cached
    /// contexts are invalidated.
    #[must_use]
    pub fn new(
        imports: Arc<dyn ImportRepository>,
        leads: Arc<dyn LeadRepository>,
        agents: Arc<dyn AgentRepository>,
        lead_service: LeadService,
    ) -> Self {
        Self {
            imports,
            leads,
            agents,
            lead_service,
        }
    }

    /// Reads a run.
    ///
    /// # Errors
    /// See [`ImportRepository::get`].
    pub async fn get(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
    ) -> Result<ImportRun, ImportError> {
        self.imports.get(tenant, run).await
    }

    /// The first `limit` rejected rows of a run, by line.
    ///
    /// # Errors
    /// See [`ImportRepository::rejects`].
    pub async fn first_rejects(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
        limit: u32,
    ) -> Result<Vec<RejectedRow>, ImportError> {
        self.imports.rejects(tenant, run, 0, limit).await
    }

    /// Every rejected row of a run, by line.
    ///
    /// # Errors
    /// See [`ImportRepository::rejects`].
    pub async fn rejects(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
    ) -> Result<Vec<RejectedRow>, ImportError> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |r: &RejectedRow| r.line);
            let page = self.imports.rejects(tenant, run, after, 1000).await?;
            let done = page.len() < 1000;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// The run's rejected rows as CSV: the file's header plus a column with
    /// each row's line and reasons (which the importer ignores by name), so
    /// the fixed file imports on its own.
    ///
    /// # Errors
    /// See [`ImportRepository::get`].
    pub async fn rejected_csv(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
    ) -> Result<Vec<u8>, ImportError> {
        let found = self.imports.get(tenant, run).await?;
        let rejects = self.rejects(tenant, run).await?;
        let mut writer = csv::Writer::from_writer(Vec::new());
        let mut header = found.headers.clone();
        header.push(leadline_domain::import::REJECT_REASONS_HEADER.to_owned());
        let encode = |e: csv::Error| ImportError::Unknown(anyhow::Error::new(e));
        writer.write_record(&header).map_err(encode)?;
        for row in &rejects {
            let reasons = row
                .errors
                .iter()
                .map(|e| {
                    if e.column.is_empty() {
                        e.reason.clone()
                    } else {
                        format!("{}: {}", e.column, e.reason)
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let mut record = row.fields.clone();
            record.resize(found.headers.len(), String::new());
            record.push(format!("line {}: {reasons}", row.line));
            writer.write_record(&record).map_err(encode)?;
        }
        writer
            .into_inner()
            .map_err(|e| ImportError::Unknown(anyhow::anyhow!("{e}")))
    }

    /// Starts (or finds) the run of a file without reading it: for callers
    /// that answer with the run before the rows are read.
    ///
    /// # Errors
    /// See [`ImportRepository::start`].
    pub async fn start(
        &self,
        tenant: TenantId,
        file_sha256: &str,
        source_name: &str,
        headers: &[String],
        on_duplicate: OnDuplicate,
    ) -> Result<ImportRun, ImportError> {
        self.imports
            .start(tenant, file_sha256, source_name, headers, on_duplicate)
            .await
    }

    /// Imports `source` (a file whose content hashes to `file_sha256`) into
    /// `tenant`, calling `progress` after each batch. Continues the file's
    /// earlier run if there is one.
    ///
    /// # Errors
    /// [`ImportFailure`]; a run that fails midway is marked failed and
    /// resumes from its last batch when the file is imported again.
    pub async fn run(
        &self,
        tenant: TenantId,
        file_sha256: &str,
        source_name: &str,
        mut source: CsvSource,
        options: &ImportOptions,
        mut progress: impl FnMut(&ImportRun) + Send,
    ) -> Result<ImportRun, ImportFailure> {
        let map = ColumnMap::new(&source.headers, &options.mapping)?;
        let mut run = self
            .imports
            .start(
                tenant,
                file_sha256,
                source_name,
                &source.headers,
                options.on_duplicate,
            )
            .await?;
        progress(&run);
        if run.status == ImportStatus::Done {
            return Ok(run);
        }
        // The next batch is read and checked while the last ones commit:
        // the checks are CPU work, the commit waits on the database. Where
        // the store takes concurrent writers, two batches are written at
        // once; a batch sharing an email with one being written waits for
        // it, so its duplicates are looked up after it committed and a
        // repeated email is never created twice.
        let (ready, batches) = mpsc::channel::<Result<Batch, ImportFailure>>(1);
        let committed_line = run.committed_line;
        let produce = async {
            // Owned here, so the committer sees the end once this is done.
            let ready = ready;
            let mut owners: HashMap<Email, Result<AgentId, String>> = HashMap::new();
            let mut carried: Option<Record> = None;
            let mut ended = false;
            while !ended {
                let batch = self
                    .next_batch(
                        tenant,
                        &map,
                        &mut source,
                        committed_line,
                        &mut owners,
                        &mut carried,
                        &mut ended,
                    )
                    .await;
                let failed = batch.is_err();
                let empty = batch.as_ref().is_ok_and(|b| b.last_line == 0);
                if !empty && ready.send(batch).await.is_err() {
                    return; // the committer stopped
                }
                if failed {
                    return;
                }
            }
        };
        let consume = async {
            // Owned here, so that a committer that stops early (another
            // process owns the run) closes the channel, and the reader
            // stops at its next batch instead of waiting forever.
            let mut batches = batches;
            // Updating duplicates writes them before their batch commits
            // (through the lead service, which keeps cached contexts
            // coherent): a second batch in flight would update its leads
            // and then be rolled back with the batch before it, and a
            // re-run would find them already updated and record no
            // `imported` event. So an updating import writes one batch at a
            // time, as before.
            let depth = match options.on_duplicate {
                OnDuplicate::Update => 1,
                OnDuplicate::Skip | OnDuplicate::Create => self.imports.concurrent_batches().max(1),
            };
            // Batches being written, oldest first. Each is decided and
            // written by a task of its own while the next is read, and
            // settled in order ([`Self::settle`]).
            let mut writing: VecDeque<Writing> = VecDeque::new();
            let mut from_line = run.committed_line;
            // Each batch's writes are on behalf of whoever runs the import:
            // the audit context is the calling task's, which a spawned task
            // does not inherit.
            let context = leadline_ports::audit_context();
            // This pass over the file: its first batch may take the run
            // over, its later ones continue only its own batches.
            let runner = uuid::Uuid::now_v7();
            let mut first = true;
            let mut stopped: Option<Stop> = None;
            let mut unreadable: Option<ImportFailure> = None;
            'read: while let Some(batch) = batches.recv().await {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(failure) => {
                        unreadable = Some(failure);
                        break;
                    }
                };
                // A batch holding an email of one being written waits for
                // it: its duplicates are looked up once that one committed,
                // so a repeated email is never created twice.
                while writing.len() >= depth
                    || writing.iter().any(|w| !w.emails.is_disjoint(&batch.emails))
                {
                    let Some(oldest) = writing.pop_front() else {
                        break;
                    };
                    match self.settle(tenant, &mut run, oldest).await {
                        Ok(()) => progress(&run),
                        Err(stop) => {
                            stopped = Some(stop);
                            break 'read;
                        }
                    }
                }
                let from = from_line;
                from_line = batch.last_line;
                let emails = batch.emails.clone();
                let this = self.clone();
                let (id, options) = (run.id, options.clone());
                let claims = std::mem::take(&mut first);
                let work = leadline_ports::audited(context.clone(), async move {
                    match this
                        .decide(tenant, runner, claims, from, &options, batch)
                        .await
                    {
                        Ok(decided) => {
                            let outcome = this.write(tenant, id, &decided).await;
                            Written {
                                decided: Some(decided),
                                outcome,
                            }
                        }
                        Err(e) => Written {
                            decided: None,
                            outcome: Err(e),
                        },
                    }
                });
                let task = tokio::spawn(work.instrument(tracing::Span::current()));
                writing.push_back(Writing { task, emails });
            }
            // What is still being written precedes any stop: settled in
            // order, each committed batch is progress a re-run keeps. After
            // a batch that failed or moved, the rest cannot move the run
            // (unless another runner did) and are only waited for.
            while let Some(oldest) = writing.pop_front() {
                if stopped.is_some() {
                    let mut oldest = oldest;
                    // Awaited, not dropped: dropping aborts it.
                    let _ = (&mut oldest.task).await;
                    continue;
                }
                match self.settle(tenant, &mut run, oldest).await {
                    Ok(()) => progress(&run),
                    Err(stop) => stopped = Some(stop),
                }
            }
            match stopped.or(unreadable.map(Stop::Failed)) {
                // Another process is importing the same file: it owns the
                // run; this one stops without judging it.
                Some(Stop::Moved) => Ok(self.imports.get(tenant, run.id).await?),
                Some(Stop::Failed(failure)) => self.fail(tenant, &run, failure).await,
                None => {
                    let run = self
                        .imports
                        .finish(tenant, run.id, ImportStatus::Done, None)
                        .await?;
                    progress(&run);
                    Ok(run)
                }
            }
        };
        let ((), outcome) = tokio::join!(produce, consume);
        outcome
    }

    /// Reads the next batch of `source`: up to [`BATCH_ROWS`] leads, each
    /// checked with the domain's rules and its owner resolved, skipping
    /// lines an earlier run committed. A row whose email is already in the
    /// batch ends it and is `carried` into the next one (which looks it up
    /// after this batch committed). Sets `ended` at the end of the file.
    #[allow(clippy::too_many_arguments)]
    async fn next_batch(
        &self,
        tenant: TenantId,
        map: &ColumnMap,
        source: &mut CsvSource,
        committed_line: u64,
        owners: &mut HashMap<Email, Result<AgentId, String>>,
        carried: &mut Option<Record>,
        ended: &mut bool,
    ) -> Result<Batch, ImportFailure> {
        let mut batch = Batch::default();
        while batch.rows.len() < BATCH_ROWS {
            let record = match carried.take() {
                Some(r) => r,
                None => match source.records.recv().await {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => return Err(ImportFailure::Unreadable(e)),
                    None => {
                        *ended = true;
                        break;
                    }
                },
            };
            if record.line <= committed_line {
                continue; // committed by an earlier run of this file
            }
            match self.read(tenant, map, &record, owners).await? {
                Row::Blank => batch.last_line = record.line,
                Row::Rejected(errors) => batch.reject(&record, errors),
                Row::Lead(lead) => {
                    let email = lead.lead.email.clone();
                    if email.as_ref().is_some_and(|e| batch.emails.contains(e)) {
                        *carried = Some(record);
                        break;
                    }
                    batch.emails.extend(email);
                    batch.last_line = record.line;
                    batch.rows.push((record, *lead));
                }
            }
        }
        Ok(batch)
    }

    async fn fail(
        &self,
        tenant: TenantId,
        run: &ImportRun,
        failure: ImportFailure,
    ) -> Result<ImportRun, ImportFailure> {
        // Best effort: the failure itself is what the caller must see.
        let _ = self
            .imports
            .finish(
                tenant,
                run.id,
                ImportStatus::Failed,
                Some(failure.to_string()),
            )
            .await;
        Err(failure)
    }

    /// One record read into a lead, with its owner resolved.
    async fn read(
        &self,
        tenant: TenantId,
        map: &ColumnMap,
        record: &Record,
        owners: &mut HashMap<Email, Result<AgentId, String>>,
    ) -> Result<Row, ImportError> {
        let fields = match &record.fields {
            Ok(fields) => fields,
            Err(reason) => {
                return Ok(Row::Rejected(vec![ColumnError {
                    column: String::new(),
                    reason: reason.clone(),
                }]));
            }
        };
        if fields.iter().all(|f| f.trim().is_empty()) {
            return Ok(Row::Blank);
        }
        let mut lead = match map.read(fields) {
            Ok(lead) => lead,
            Err(errors) => return Ok(Row::Rejected(errors)),
        };
        if let Some(owner) = lead.owner.clone() {
            if !owners.contains_key(&owner) {
                let resolved = match self.agents.find_by_email(tenant, &owner).await {
                    Ok(Some(agent)) if agent.active => Ok(agent.id),
                    Ok(Some(_)) => Err(format!("{owner} is an inactive agent")),
                    Ok(None) => Err(format!("no agent has the email {owner}")),
                    Err(e) => return Err(ImportError::Unknown(anyhow::Error::new(e))),
                };
                owners.insert(owner.clone(), resolved);
            }
            match &owners[&owner] {
                Ok(agent) => lead.lead.assigned_agent_id = Some(*agent),
                Err(reason) => {
                    let column = map
                        .columns()
                        .find(|(_, t)| **t == Target::Owner)
                        .map_or("owner", |(h, _)| h)
                        .to_owned();
                    return Ok(Row::Rejected(vec![ColumnError {
                        column,
                        reason: reason.clone(),
                    }]));
                }
            }
        }
        Ok(Row::Lead(Box::new(lead)))
    }

    /// Decides each row of `batch` against the tenant's existing leads
    /// (updating those it should): the batch to write, continuing the run
    /// from `from_line`.
    async fn decide(
        &self,
        tenant: TenantId,
        runner: uuid::Uuid,
        claims: bool,
        from_line: u64,
        options: &ImportOptions,
        batch: Batch,
    ) -> Result<ImportBatch, ImportError> {
        let emails: Vec<Email> = batch.emails.iter().cloned().collect();
        let existing: HashMap<Email, Lead> = self
            .leads
            .find_by_emails(tenant, &emails)
            .await
            .map_err(|e| ImportError::Unknown(anyhow::Error::new(e)))?
            .into_iter()
            .filter_map(|l| l.email.clone().map(|e| (e, l)))
            .collect();
        let mut out = ImportBatch {
            runner,
            claims,
            from_line,
            to_line: batch.last_line,
            creates: Vec::new(),
            rows: 0,
            updated: Vec::new(),
            skipped: 0,
            rejects: batch.rejects,
        };
        out.rows = out.rejects.len() as u64;
        for (record, row) in batch.rows {
            out.rows += 1;
            let found = row.lead.email.as_ref().and_then(|e| existing.get(e));
            match (found, options.on_duplicate) {
                (None, _) | (Some(_), OnDuplicate::Create) => {
                    out.creates.push((record.line, row.lead));
                }
                (Some(_), OnDuplicate::Skip) => out.skipped += 1,
                (Some(lead), OnDuplicate::Update) => match self.update(tenant, lead, &row).await {
                    Ok(true) => out.updated.push((record.line, lead.id)),
                    // Already as the row says: nothing to record.
                    Ok(false) => out.skipped += 1,
                    Err(reason) => out.rejects.push(RejectedRow {
                        line: record.line,
                        errors: vec![ColumnError {
                            column: String::new(),
                            reason,
                        }],
                        fields: record.fields.unwrap_or_default(),
                    }),
                },
            }
        }
        Ok(out)
    }

    /// Commits a decided batch.
    async fn write(
        &self,
        tenant: TenantId,
        run: leadline_domain::ImportId,
        batch: &ImportBatch,
    ) -> Result<ImportRun, ImportError> {
        let committed = self.imports.commit(tenant, run, batch).await?;
        // The updated leads' timelines gained their `imported` event.
        for (_, lead) in &batch.updated {
            self.lead_service.invalidate(tenant, *lead).await;
        }
        Ok(committed)
    }

    /// Waits for the oldest batch being written and moves `run` to where
    /// it committed. A batch that got to its move before the batch before
    /// it had committed was rolled back (`Moved` while `run`, now past that
    /// batch, stands where it continues): it is written once more.
    async fn settle(
        &self,
        tenant: TenantId,
        run: &mut ImportRun,
        mut writing: Writing,
    ) -> Result<(), Stop> {
        let written = (&mut writing.task).await.map_err(|e| {
            Stop::Failed(ImportFailure::Store(ImportError::Unknown(anyhow::anyhow!(
                "an import batch's task ended: {e}"
            ))))
        })?;
        let outcome = match (written.outcome, written.decided) {
            (Err(ImportError::Moved { .. }), Some(decided))
                if decided.from_line == run.committed_line =>
            {
                self.write(tenant, run.id, &decided).await
            }
            (outcome, _) => outcome,
        };
        match outcome {
            Ok(committed) => {
                *run = committed;
                Ok(())
            }
            Err(ImportError::Moved { .. }) => Err(Stop::Moved),
            Err(e) => Err(Stop::Failed(e.into())),
        }
    }

    /// Brings `lead` up to the row ([`ImportedLead::update_for`]); `false`
    /// when it already was.
    async fn update(
        &self,
        tenant: TenantId,
        lead: &Lead,
        row: &ImportedLead,
    ) -> Result<bool, String> {
        let Some(req) = row.update_for(lead)? else {
            return Ok(false);
        };
        match self.lead_service.update(tenant, lead.id, &req).await {
            Ok(_) => Ok(true),
            Err(UpdateLeadError::InvalidTransition { from, to }) => {
                Err(format!("status: a lead cannot move from {from} to {to}"))
            }
            Err(UpdateLeadError::Conflict { .. }) => {
                Err("the lead changed while importing; import the row again".to_owned())
            }
            Err(UpdateLeadError::AgentInactive | UpdateLeadError::AgentNotFound) => {
                Err("owner: the agent is missing or inactive".to_owned())
            }
            Err(e) => Err(format!("the lead could not be updated: {e}")),
        }
    }
}

impl std::fmt::Debug for ImportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportService").finish_non_exhaustive()
    }
}

/// A batch being written by its task, with the emails it holds.
struct Writing {
    task: tokio::task::JoinHandle<Written>,
    emails: HashSet<Email>,
}

/// A run dropped before its end (an import cancelled, a server stopping)
/// stops the batches it was writing rather than leaving them to commit
/// behind its back: each rolls back unless its commit was already sent,
/// and either way the run's row says where the file stands.
impl Drop for Writing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a batch's task ended: the batch as decided (none if deciding
/// failed), and its commit's outcome.
struct Written {
    decided: Option<ImportBatch>,
    outcome: Result<ImportRun, ImportError>,
}

/// Why a run's writing stopped before the end of its file.
enum Stop {
    /// Another process owns the run.
    Moved,
    /// The run failed.
    Failed(ImportFailure),
}

enum Row {
    Blank,
    Rejected(Vec<ColumnError>),
    Lead(Box<ImportedLead>),
}

#[derive(Default)]
struct Batch {
    rows: Vec<(Record, ImportedLead)>,
    rejects: Vec<RejectedRow>,
    emails: HashSet<Email>,
    last_line: u64,
}

impl Batch {
    fn reject(&mut self, record: &Record, errors: Vec<ColumnError>) {
        self.last_line = record.line;
        self.rejects.push(RejectedRow {
            line: record.line,
            errors,
            fields: record.fields.clone().unwrap_or_default(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decoded(text: &'static [u8]) -> (Vec<String>, Vec<Record>) {
        let mut source = CsvSource::open(text).await.expect("opens");
        let mut records = Vec::new();
        while let Some(r) = source.records.recv().await {
            records.push(r.expect("reads"));
        }
        (source.headers, records)
    }

    #[tokio::test]
    async fn dirty_files_decode_with_their_line_numbers() {
        let (headers, records) = decoded(
            b"\xEF\xBB\xBFFirst Name;Last Name;Notes\r\n\
              Grace;Hopper;\"said \"\"hi\"\";\r\nthen left\"\r\n\
              \r\n\
              Ada;Lovelace\r\n\
              Bad;\xFF\xFE;x\r\n",
        )
        .await;
        assert_eq!(headers, ["First Name", "Last Name", "Notes"]);
        assert_eq!(records.len(), 3, "{records:?}");
        assert_eq!(records[0].line, 2);
        assert_eq!(
            records[0].fields.as_deref().expect("utf-8")[2],
            "said \"hi\";\r\nthen left"
        );
        assert_eq!(records[1].line, 5);
        assert_eq!(records[1].fields.as_deref().expect("utf-8").len(), 2);
        assert_eq!(records[2].line, 6);
        assert!(records[2].fields.is_err());
        // A last line without its newline keeps its number.
        let (_, records) = decoded(b"name\nA B\n\nC D").await;
        let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4]);
    }

    #[tokio::test]
    async fn the_delimiter_is_guessed_from_the_header() {
        assert_eq!(delimiter(b"a,b;c,d\n1;2;3;4;5"), b',');
        assert_eq!(delimiter(b"a;b;c\n"), b';');
        assert_eq!(delimiter(b"a\tb\t\"c,d,e\"\n"), b'\t');
        let (headers, _) = decoded(b"email\tname\n").await;
        assert_eq!(headers, ["email", "name"]);
        assert!(CsvSource::open(&b""[..]).await.is_err());
    }
}
