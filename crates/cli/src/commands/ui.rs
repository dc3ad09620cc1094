//! `grove ui`: a live terminal view of jobs and tasks.
//!
//! The screen is a pure function of [`View`] (`render`), so tests draw it on ratatui's
//! `TestBackend` without a coordinator. The state is read in a background task with a
//! timeout (`fetch`); the draw loop only looks at the latest answer and never awaits it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use grove_coordinator::{JobRow, Store, TaskRow};
use grove_core::TaskState;
use grove_core::layout::Layout;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout as Split};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

/// A live view of jobs and their tasks: state, diff stats, cost, the selected task's log.
///
/// Keys: j/k or arrows move, space marks tasks for a bulk action, m merges the selected
/// (or marked) tasks' jobs, d discards, r retries, p picks a variant, a replies to a
/// question, c cancels the job, f cycles the state filter, l/Tab switches log and diff,
/// q quits. A refresh that is late shows "stale since ...". NO_COLOR is respected.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  grove ui                                   # every job of the local state
  grove ui --job rename-1a2b                 # one job
  grove ui --coordinator http://coord:7070   # a coordinator daemon's jobs")]
pub struct UiArgs {
    /// Only this job
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Show only tasks in this state (running, attention, unread, done, failed)
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Show only tasks of this repository (a cross-repository job's repository name, else a
    /// job's source)
    #[arg(long, value_name = "NAME")]
    pub repo: Option<String>,
    /// Show only tasks of this pool
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Refresh every this long
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Ask a coordinator daemon instead of the local state [env: GROVE_COORDINATOR]
    #[arg(long, env = "GROVE_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub tls: crate::remote::Tls,
}

/// How a task is shown: one of five indicators, readable without colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Running,
    Attention,
    Done,
    Failed,
}

impl Mark {
    fn of(t: &TaskRow) -> Mark {
        match t.state {
            TaskState::Succeeded => Mark::Done,
            TaskState::Failed | TaskState::Cancelled => Mark::Failed,
            TaskState::NeedsAttention | TaskState::Parked => Mark::Attention,
            _ => Mark::Running,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Mark::Running => "~",
            Mark::Attention => "!",
            Mark::Done => "+",
            Mark::Failed => "x",
        }
    }
    fn color(self) -> Color {
        match self {
            Mark::Running => Color::Cyan,
            Mark::Attention => Color::Yellow,
            Mark::Done => Color::Green,
            Mark::Failed => Color::Red,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mark::Running => "running",
            Mark::Attention => "attention",
            Mark::Done => "done",
            Mark::Failed => "failed",
        }
    }
}

/// One task row of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLine {
    pub job: String,
    /// The repository: its name in a cross-repository job, else the job's source.
    pub repo: String,
    pub task: String,
    pub shown: String,
    pub mark: Mark,
    pub unread: bool,
    pub pool: String,
    pub stat: String,
    pub cost: String,
    pub question: Option<String>,
    pub log: String,
    pub files: Vec<String>,
    /// What makes it unread when it changes.
    pub seen_key: String,
}

/// Which pane shows below the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pane {
    #[default]
    Log,
    Diff,
}

/// Everything the screen shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub tasks: Vec<TaskLine>,
    pub selected: usize,
    pub marked: BTreeSet<(String, String)>,
    pub filter_state: Option<String>,
    pub filter_repo: Option<String>,
    pub filter_pool: Option<String>,
    pub pane: Pane,
    pub color: bool,
    /// Set when the last refresh is late: "stale since 12s (reason)".
    pub stale: Option<String>,
    /// The outcome of the last action, or a prompt.
    pub status: String,
    /// Text being typed for a reply, when replying.
    pub input: Option<String>,
}

impl View {
    /// The tasks the filters let through.
    pub fn visible(&self) -> Vec<&TaskLine> {
        self.tasks
            .iter()
            .filter(|t| {
                self.filter_state.as_deref().is_none_or(|s| match s {
                    "unread" => t.unread,
                    s => t.mark.name() == s,
                })
            })
            .filter(|t| self.filter_repo.as_deref().is_none_or(|r| t.repo == r))
            .filter(|t| self.filter_pool.as_deref().is_none_or(|p| t.pool == p))
            .collect()
    }

    pub fn current(&self) -> Option<&TaskLine> {
        let v = self.visible();
        v.get(self.selected.min(v.len().saturating_sub(1))).copied()
    }

    /// The selected task, or the marked ones: what an action applies to.
    pub fn targets(&self) -> Vec<(String, String)> {
        if !self.marked.is_empty() {
            return self.marked.iter().cloned().collect();
        }
        self.current().map(|t| vec![(t.job.clone(), t.task.clone())]).unwrap_or_default()
    }
}

/// The task lines of what `grove status` reads, with unread from `seen`.
pub fn lines(jobs: &[(JobRow, Vec<TaskRow>)], seen: &BTreeMap<String, String>) -> Vec<TaskLine> {
    let mut out = Vec::new();
    for (j, tasks) in jobs {
        for t in tasks {
            let shown = grove_core::task::shown_state(t.state, t.merge_state).to_owned();
            let key = format!("{shown}@{}", t.head.as_deref().unwrap_or("-"));
            let id = format!("{}/{}", j.id, t.slug);
            out.push(TaskLine {
                job: j.id.to_string(),
                // A cross-repository job's repository by name; else the job's source.
                repo: j.repo.as_ref().map_or_else(|| j.source.clone(), |r| r.name.clone()),
                task: t.slug.clone(),
                mark: Mark::of(t),
                unread: seen.get(&id).is_some_and(|k| *k != key),
                shown,
                pool: t.placed.clone().unwrap_or_else(|| t.pool.clone()),
                stat: if t.stat.is_empty() { "-".into() } else { t.stat.to_string() },
                cost: super::status::cost_cell(t.agent.usage.as_ref()),
                question: t.agent.question.clone().filter(|_| t.state == TaskState::NeedsAttention),
                log: t.log_tail.clone().unwrap_or_default(),
                files: t.files.clone(),
                seen_key: key,
            });
        }
    }
    out
}

/// Draw the view: the task list, then the selected task's log or diff, then a status line.
pub fn render(f: &mut Frame, v: &View) {
    let style = |c: Color| if v.color { Style::default().fg(c) } else { Style::default() };
    let rows = Split::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(50), Constraint::Min(3), Constraint::Length(1)])
        .split(f.area());
    let mut list = Vec::new();
    for (i, t) in v.visible().iter().enumerate() {
        let here = i == v.selected;
        let marked = v.marked.contains(&(t.job.clone(), t.task.clone()));
        let cursor = if here { ">" } else { " " };
        let check = if marked { "[x]" } else { "[ ]" };
        let unread = if t.unread { "*" } else { " " };
        let mut line = Line::from(vec![
            Span::raw(format!("{cursor}{check} ")),
            Span::styled(t.mark.symbol(), style(t.mark.color())),
            Span::raw(unread),
            Span::raw(format!(
                " {:<14} {:<16} {:<16} {:<8} {:<18} {}",
                t.job, t.task, t.shown, t.pool, t.stat, t.cost
            )),
        ]);
        if here && v.color {
            line = line.style(Style::default().add_modifier(Modifier::REVERSED));
        }
        list.push(line);
    }
    if list.is_empty() {
        list.push(Line::raw("no tasks (filters may hide them)"));
    }
    // Scroll so the selected row stays in sight.
    let room = rows[0].height.saturating_sub(2).max(1) as usize;
    list.drain(..v.selected.saturating_sub(room - 1).min(list.len().saturating_sub(1)));
    let mut filters = Vec::new();
    for (k, val) in [("state", &v.filter_state), ("repo", &v.filter_repo), ("pool", &v.filter_pool)] {
        if let Some(x) = val {
            filters.push(format!("{k}={x}"));
        }
    }
    let title =
        if filters.is_empty() { " tasks ".to_owned() } else { format!(" tasks [{}] ", filters.join(" ")) };
    f.render_widget(Paragraph::new(list).block(Block::default().borders(Borders::ALL).title(title)), rows[0]);
    let (title, body) = match v.current() {
        None => (" log ".to_owned(), String::new()),
        Some(t) => {
            let mut body = String::new();
            if let Some(q) = &t.question {
                body.push_str(&format!("asks: {}\n(a to reply)\n\n", q.trim()));
            }
            match v.pane {
                Pane::Log => {
                    body.push_str(&t.log);
                    (format!(" log {}/{} ", t.job, t.task), body)
                }
                Pane::Diff => {
                    body.push_str(&format!("{}\n", t.stat));
                    for p in &t.files {
                        body.push_str(&format!("  {p}\n"));
                    }
                    (format!(" diff {}/{} ", t.job, t.task), body)
                }
            }
        }
    };
    // The end of the log, as much as fits.
    let fit = rows[1].height.saturating_sub(2) as usize;
    let shown: Vec<&str> = body.lines().collect();
    let tail = shown[shown.len().saturating_sub(fit)..].join("\n");
    f.render_widget(
        Paragraph::new(tail)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(title)),
        rows[1],
    );
    let status = match (&v.input, &v.stale) {
        (Some(text), _) => format!("reply: {text}_"),
        (None, Some(s)) => format!("stale since {s} | {}", v.status),
        (None, None) => v.status.clone(),
    };
    let keys =
        "q quit  space mark  m merge  d discard  r retry  p pick  a reply  c cancel  f filter  l log/diff";
    let text = if status.is_empty() { keys.to_owned() } else { format!("{status} | {keys}") };
    f.render_widget(Paragraph::new(text).style(style(Color::DarkGray)), rows[2]);
}

/// Where `grove ui` remembers what was seen: task id -> the state it was seen in.
fn seen_path(home: &Path) -> PathBuf {
    Layout::new(home.to_path_buf()).home().join("ui-seen.json")
}

fn load_seen(home: &Path) -> BTreeMap<String, String> {
    std::fs::read(seen_path(home)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn save_seen(home: &Path, seen: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let path = seen_path(home);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(seen)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One refresh: the jobs, or why there are none.
type Snapshot = Result<Vec<(JobRow, Vec<TaskRow>)>, String>;

/// Read the state every `every`, each read under a timeout, into a watch channel.
fn fetch(home: PathBuf, args: &UiArgs) -> tokio::sync::watch::Receiver<Option<(Instant, Snapshot)>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let (url, tls, job, every) = (args.coordinator.clone(), args.tls.clone(), args.job.clone(), args.every);
    tokio::spawn(async move {
        let mut client = None;
        loop {
            let limit = every.max(Duration::from_secs(2)) * 3;
            let got: Snapshot = match &url {
                Some(url) => {
                    let read = async {
                        if client.is_none() {
                            client = Some(crate::remote::connect(url, &tls).await?);
                        }
                        match client.as_mut() {
                            Some(c) => super::status::remote_jobs(c, url, job.as_deref()).await,
                            None => anyhow::bail!("no connection"),
                        }
                    };
                    match tokio::time::timeout(limit, read).await {
                        Ok(Ok(j)) => Ok(j),
                        Ok(Err(e)) => {
                            client = None;
                            Err(format!("{e:#}"))
                        }
                        Err(_) => Err("the coordinator did not answer in time".into()),
                    }
                }
                None => {
                    let (home, job) = (home.clone(), job.clone());
                    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                        let store = Store::open(&Layout::new(home).db())?;
                        super::status::local_jobs(&store, job.as_deref())
                    });
                    match tokio::time::timeout(limit, read).await {
                        Ok(Ok(Ok(j))) => Ok(j),
                        Ok(Ok(Err(e))) => Err(format!("{e:#}")),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the state did not answer in time".into()),
                    }
                }
            };
            let ok = got.is_ok();
            if tx.send(Some((Instant::now(), got))).is_err() {
                return;
            }
            if ok {
                tokio::time::sleep(every).await;
            } else {
                tokio::time::sleep(every.max(Duration::from_secs(1))).await;
            }
        }
    });
    rx
}

/// Puts the terminal back however `cmd_ui` ends, panics included.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub async fn cmd_ui(home: PathBuf, args: UiArgs) -> anyhow::Result<ExitCode> {
    let mut view = View {
        filter_state: args.state.clone(),
        filter_repo: args.repo.clone(),
        filter_pool: args.pool.clone(),
        color: !crate::output::no_color(),
        ..View::default()
    };
    let mut seen = load_seen(&home);
    let mut rx = fetch(home.clone(), &args);
    // ratatui::init installs a panic hook that restores the terminal; Restore covers errors.
    let mut term = ratatui::try_init().context("opening the terminal")?;
    let _restore = Restore;
    let mut last_ok = Instant::now();
    let mut actions: Vec<tokio::task::JoinHandle<String>> = Vec::new();
    loop {
        if let Some((at, snap)) = rx.borrow_and_update().clone() {
            match snap {
                Ok(jobs) => {
                    last_ok = at;
                    view.stale = None;
                    view.tasks = lines(&jobs, &seen);
                }
                Err(why) => view.stale = Some(format!("{}s ({why})", last_ok.elapsed().as_secs())),
            }
        }
        if view.stale.is_none() && last_ok.elapsed() > args.every * 3 + Duration::from_secs(2) {
            view.stale = Some(format!("{}s", last_ok.elapsed().as_secs()));
        }
        // Looking at a task marks it read.
        if let Some(t) = view.current() {
            let id = format!("{}/{}", t.job, t.task);
            if seen.get(&id) != Some(&t.seen_key) {
                seen.insert(id, t.seen_key.clone());
                let key = t.seen_key.clone();
                if let Some(l) = view.tasks.iter_mut().find(|l| l.seen_key == key && l.unread) {
                    l.unread = false;
                }
                save_seen(&home, &seen)?;
            }
        }
        for done in actions.extract_if(.., |h| h.is_finished()) {
            view.status = done.await.unwrap_or_else(|e| e.to_string());
        }
        term.draw(|f| render(f, &view)).context("drawing")?;
        if !event::poll(Duration::from_millis(200)).context("reading keys")? {
            continue;
        }
        let Event::Key(key) = event::read().context("reading keys")? else { continue };
        if key.kind != event::KeyEventKind::Press {
            continue;
        }
        match on_key(&mut view, key) {
            Step::Quit => break,
            Step::Stay => {}
            Step::Run(argv) => {
                view.status = format!("running grove {} ...", argv.join(" "));
                actions.push(tokio::spawn(run_grove(home.clone(), args.coordinator.clone(), argv)));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a key asks for.
#[derive(Debug, PartialEq)]
pub enum Step {
    Stay,
    Quit,
    /// A grove command line, run as its own process (the same code as typing it).
    Run(Vec<String>),
}

/// Apply a key to the view; actions come back as grove commands to run.
pub fn on_key(v: &mut View, key: KeyEvent) -> Step {
    if let Some(text) = &mut v.input {
        match key.code {
            KeyCode::Enter => {
                let answer = std::mem::take(text);
                v.input = None;
                if let Some(t) = v.current() {
                    return Step::Run(vec!["reply".into(), format!("{}/{}", t.job, t.task), answer]);
                }
            }
            KeyCode::Esc => v.input = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        return Step::Stay;
    }
    let n = v.visible().len();
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => return Step::Quit,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Step::Quit,
        KeyCode::Down | KeyCode::Char('j') => v.selected = (v.selected + 1).min(n.saturating_sub(1)),
        KeyCode::Up | KeyCode::Char('k') => v.selected = v.selected.saturating_sub(1),
        KeyCode::Char(' ') => {
            if let Some(t) = v.current() {
                let id = (t.job.clone(), t.task.clone());
                if !v.marked.remove(&id) {
                    v.marked.insert(id);
                }
            }
        }
        KeyCode::Char('l') | KeyCode::Tab => {
            v.pane = if v.pane == Pane::Log { Pane::Diff } else { Pane::Log }
        }
        KeyCode::Char('f') => {
            let order =
                [None, Some("running"), Some("attention"), Some("unread"), Some("done"), Some("failed")];
            let i = order.iter().position(|o| *o == v.filter_state.as_deref()).unwrap_or(0);
            v.filter_state = order[(i + 1) % order.len()].map(str::to_owned);
            v.selected = 0;
        }
        KeyCode::Char('a') if v.current().is_some_and(|t| t.question.is_some()) => {
            v.input = Some(String::new())
        }
        KeyCode::Char(c @ ('m' | 'c')) => {
            let jobs: BTreeSet<String> = v.targets().into_iter().map(|(j, _)| j).collect();
            let verb = if c == 'm' { "merge" } else { "cancel" };
            if !jobs.is_empty() {
                let mut argv = vec![verb.to_owned()];
                argv.extend(jobs);
                v.marked.clear();
                return Step::Run(argv);
            }
        }
        KeyCode::Char(c @ ('d' | 'r' | 'p')) => {
            let verb = match c {
                'd' => "discard",
                'r' => "retry",
                _ => "pick",
            };
            let tasks: Vec<String> = v.targets().into_iter().map(|(j, t)| format!("{j}/{t}")).collect();
            if !tasks.is_empty() {
                let mut argv = vec![verb.to_owned()];
                argv.extend(tasks);
                v.marked.clear();
                return Step::Run(argv);
            }
        }
        _ => {}
    }
    Step::Stay
}

/// Run one grove command (as this same executable) and say how it went.
async fn run_grove(home: PathBuf, coordinator: Option<String>, argv: Vec<String>) -> String {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return format!("cannot find grove: {e}"),
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--home").arg(&home);
    // One command per job or task: the verbs take one each.
    let (verb, targets) = match argv.split_first() {
        Some((v, t)) => (v.clone(), t.to_vec()),
        None => return String::new(),
    };
    let mut said = Vec::new();
    let reply = verb == "reply";
    let groups: Vec<Vec<String>> =
        if reply { vec![targets] } else { targets.into_iter().map(|t| vec![t]).collect() };
    for g in groups {
        let mut c = tokio::process::Command::new(cmd.as_std().get_program());
        c.arg("--home").arg(&home).arg(&verb).args(&g);
        if let Some(url) = &coordinator {
            c.arg("--coordinator").arg(url);
        }
        c.stdin(std::process::Stdio::null());
        match c.output().await {
            Ok(o) if o.status.success() => said.push(format!("{verb} {}: ok", g[0])),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                said.push(format!("{verb} {}: {}", g[0], err.lines().last().unwrap_or("failed")));
            }
            Err(e) => said.push(format!("{verb} {}: {e}", g[0])),
        }
    }
    said.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn line(job: &str, task: &str, mark: Mark, shown: &str) -> TaskLine {
        TaskLine {
            job: job.into(),
            repo: "app".into(),
            task: task.into(),
            shown: shown.into(),
            mark,
            unread: false,
            pool: "local".into(),
            stat: "2 files +10 -3".into(),
            cost: "$0.0121".into(),
            question: None,
            log: format!("turn 1 of {task}\ncommitted\n"),
            files: vec![format!("{task}/src/lib.rs")],
            seen_key: shown.into(),
        }
    }

    fn view() -> View {
        let mut q = line("rename-1a2b", "web", Mark::Attention, "needs-attention");
        q.question = Some("Keep the old name as an alias?".into());
        let mut u = line("rename-1a2b", "cli", Mark::Done, "succeeded");
        u.unread = true;
        View {
            tasks: vec![
                line("rename-1a2b", "core", Mark::Running, "running"),
                u,
                q,
                line("rename-1a2b", "docs", Mark::Failed, "failed"),
            ],
            color: true,
            ..View::default()
        }
    }

    fn draw(v: &View) -> String {
        let mut t = match Terminal::new(TestBackend::new(100, 18)) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = t.draw(|f| render(f, v)) {
            panic!("{e}");
        }
        let buf = t.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::from(KeyCode::Char(c))
    }

    #[test]
    fn ui_list_and_selected_log() {
        let s = draw(&view());
        assert!(s.contains(">[ ] ~  rename-1a2b    core"), "{s}");
        assert!(s.contains("[ ] +* rename-1a2b    cli"), "{s}");
        assert!(s.contains("log rename-1a2b/core"), "{s}");
        assert!(s.contains("turn 1 of core"), "{s}");
        assert!(s.contains("$0.0121"), "{s}");
    }

    #[test]
    fn ui_diff_view() {
        let mut v = view();
        assert_eq!(on_key(&mut v, key('l')), Step::Stay);
        let s = draw(&v);
        assert!(s.contains("diff rename-1a2b/core"), "{s}");
        assert!(s.contains("core/src/lib.rs"), "{s}");
    }

    #[test]
    fn ui_filter_applied() {
        let mut v = view();
        v.filter_state = Some("failed".into());
        let s = draw(&v);
        assert!(s.contains("tasks [state=failed]"), "{s}");
        assert!(s.contains("docs"), "{s}");
        assert!(!s.contains("core "), "{s}");
        v.filter_state = None;
        v.filter_pool = Some("cloud".into());
        assert!(draw(&v).contains("no tasks"));
    }

    #[test]
    fn ui_multi_select_bulk_merge() {
        let mut v = view();
        on_key(&mut v, key(' '));
        on_key(&mut v, key('j'));
        on_key(&mut v, key(' '));
        let s = draw(&v);
        assert!(s.contains("[x] ~  rename-1a2b    core"), "{s}");
        assert!(s.contains(">[x] +* rename-1a2b    cli"), "{s}");
        assert_eq!(
            on_key(&mut v, key('d')),
            Step::Run(vec!["discard".into(), "rename-1a2b/cli".into(), "rename-1a2b/core".into()])
        );
        assert!(v.marked.is_empty());
        assert_eq!(on_key(&mut v, key('m')), Step::Run(vec!["merge".into(), "rename-1a2b".into()]));
    }

    #[test]
    fn ui_needs_attention_question_and_reply() {
        let mut v = view();
        v.selected = 2;
        let s = draw(&v);
        assert!(s.contains("asks: Keep the old name as an alias?"), "{s}");
        on_key(&mut v, key('a'));
        for c in "yes".chars() {
            on_key(&mut v, key(c));
        }
        assert!(draw(&v).contains("reply: yes_"));
        assert_eq!(
            on_key(&mut v, KeyEvent::from(KeyCode::Enter)),
            Step::Run(vec!["reply".into(), "rename-1a2b/web".into(), "yes".into()])
        );
    }

    #[test]
    fn ui_no_color_has_no_colors_but_symbols() {
        let mut v = view();
        v.color = false;
        let mut t = match Terminal::new(TestBackend::new(100, 18)) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = t.draw(|f| render(f, &v)) {
            panic!("{e}");
        }
        let buf = t.backend().buffer();
        for c in buf.content() {
            assert_eq!(c.fg, Color::Reset);
            assert_eq!(c.bg, Color::Reset);
            assert!(!c.modifier.contains(Modifier::REVERSED));
        }
        let s = draw(&v);
        for sym in ["~", "+*", "!", "x "] {
            assert!(s.contains(sym), "{sym}: {s}");
        }
    }

    #[test]
    fn ui_list_scrolls_to_the_selected_task() {
        let mut v = view();
        for i in 0..30 {
            v.tasks.push(line("big-1", &format!("t{i:02}"), Mark::Running, "running"));
        }
        v.selected = 33;
        let s = draw(&v);
        assert!(s.contains(">[ ] ~  big-1          t29"), "{s}");
    }

    #[test]
    fn ui_stale_shown() {
        let mut v = view();
        v.stale = Some("12s (the coordinator did not answer in time)".into());
        assert!(draw(&v).contains("stale since 12s"));
    }
}
