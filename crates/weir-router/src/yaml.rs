//! The one module that knows the YAML library.
//!
//! Values are read with `serde_yaml`; positions come from `yaml-rust2`'s event parser, which
//! reports a line and column for every key and item. A field path such as
//! `spec.http[1].route[0].weight` is the bridge between the two: serde tells us which path is
//! wrong or ignored, the position map tells us where that path is in the file.
//!
//! Swapping the YAML library means rewriting this file and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::finding::{Code, Finding, Location};

/// One YAML document (or one item of a `kind: List`) with the means to locate its fields.
#[derive(Clone, Debug)]
pub struct Document {
    value: serde_yaml::Value,
    file: Arc<str>,
    /// Path prefix of this node inside its document: empty, or `items[3]` for a List item.
    prefix: String,
    positions: Arc<Positions>,
    /// Where the document itself starts.
    start: (u32, u32),
}

/// Field path -> (line, column), 1-based, for one document.
#[derive(Debug, Default)]
struct Positions(HashMap<String, (u32, u32)>);

/// Parses a YAML stream into its documents, within the process's [`Limits`]. Empty documents
/// are skipped.
///
/// A syntax error is one `YamlSyntax` finding with the file, line and column; a text over a
/// limit is one `ConfigTooLarge` finding naming the limit and the flag that raises it.
pub fn parse_stream(file: &Arc<str>, text: &str) -> Result<Vec<Document>, Finding> {
    parse_stream_within(file, text, &limits())
}

/// [`parse_stream`] within the given limits. The limits are checked on the event stream
/// first, with aliases counted as what they expand to, so that nothing unbounded is ever
/// built (serde's `Value` expands every alias).
pub fn parse_stream_within(
    file: &Arc<str>,
    text: &str,
    limits: &Limits,
) -> Result<Vec<Document>, Finding> {
    limits.check(file, text)?;
    let mut values = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        match <serde_yaml::Value as serde::Deserialize>::deserialize(de) {
            Ok(v) => values.push(v),
            Err(e) => return Err(syntax_finding(file, text, &e)),
        }
    }
    let positions = locate_stream(text);
    let aligned = positions.len() == values.len();
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let (positions, start) = if aligned {
            let (p, s) = &positions[i];
            (Arc::new(Positions(p.clone())), *s)
        } else {
            (Arc::new(Positions::default()), (0, 0))
        };
        docs.push(Document {
            value,
            file: file.clone(),
            prefix: String::new(),
            positions,
            start,
        });
    }
    Ok(docs)
}

/// Deserializes a whole single-document YAML text into `T`, for files that are not Istio
/// resources (a canary spec, for one). Errors carry the file, line and column.
pub fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Finding> {
    single_document(file, text)?.deserialize(&mut |_| {})
}

/// Parses a text that must hold exactly one YAML document, keeping its positions so that a
/// caller's own checks can point at a line with [`Document::location`].
pub fn single_document(file: &str, text: &str) -> Result<Document, Finding> {
    let file: Arc<str> = file.into();
    let mut docs = parse_stream(&file, text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err(Finding::error(
            Code::YamlSyntax,
            Location::origin(file, ""),
            "the file holds no YAML document",
        )),
        n => Err(Finding::error(
            Code::YamlSyntax,
            docs[1].location(""),
            format!(
                "expected one YAML document, found {n}: split the file or remove the extra `---`"
            ),
        )),
    }
}

// === limits ===

/// Bounds on one config text, so that no file (a billion-laughs alias bomb, deep nesting, a
/// huge stream) can exhaust the memory or the time of a sidecar. Generous by default; the
/// binary raises them with its `--max-config-*` flags ([`set_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest text, in bytes (`--max-config-bytes`).
    pub max_bytes: usize,
    /// Deepest nesting of mappings and sequences (`--max-config-depth`).
    pub max_depth: usize,
    /// Most nodes (scalars, mappings, sequences), every alias counted as the nodes it expands
    /// to (`--max-config-nodes`).
    pub max_nodes: usize,
    /// Most YAML documents in one text (`--max-config-documents`).
    pub max_documents: usize,
    /// Most HTTP rules over all VirtualServices of a config (`--max-config-rules`).
    pub max_rules: usize,
    /// Most hosts over all VirtualServices and ServiceEntries of a config
    /// (`--max-config-hosts`).
    pub max_hosts: usize,
}

impl Limits {
    /// 4 MiB, 64 levels, 200,000 nodes, 10,000 documents, 10,000 rules and 10,000 hosts: far
    /// beyond any hand-written mesh config (the lesson's file has about 120 nodes), and well
    /// under 100 MB of memory at the caps.
    pub const DEFAULT: Limits = Limits {
        max_bytes: 4 << 20,
        max_depth: 64,
        max_nodes: 200_000,
        max_documents: 10_000,
        max_rules: 10_000,
        max_hosts: 10_000,
    };

    /// Checks `text` against the limits on the YAML event stream, stopping at the first limit
    /// exceeded. A syntax error is left to the parser that follows (it words it better).
    pub fn check(&self, file: &Arc<str>, text: &str) -> Result<(), Finding> {
        let over = |line: u32, what: String, flag: &str| {
            Finding::error(
                Code::ConfigTooLarge,
                Location {
                    file: file.clone(),
                    line,
                    column: 1,
                    path: String::new(),
                },
                format!("{what}: split the config, or raise the limit with `{flag}`"),
            )
        };
        if text.len() > self.max_bytes {
            return Err(over(
                1,
                format!(
                    "the file is {} bytes, over the limit of {} bytes",
                    text.len(),
                    self.max_bytes
                ),
                "--max-config-bytes",
            ));
        }
        // Flow nesting first, on the bytes: the YAML scanner looks ahead for a possible
        // implicit key at every open `[` / `{`, which is quadratic in the nesting.
        if let Some(line) = flow_nesting_over(text, self.max_depth) {
            return Err(over(
                line,
                format!("nesting deeper than {} levels", self.max_depth),
                "--max-config-depth",
            ));
        }
        // The expanded size of each open node, and of each anchored node once complete.
        let mut open: Vec<(usize, u64)> = Vec::new();
        let mut anchors: HashMap<usize, u64> = HashMap::new();
        let (mut nodes, mut documents) = (0u64, 0usize);
        let mut parser = Parser::new_from_str(text);
        loop {
            let Ok((event, mark)) = parser.next_token() else {
                return Ok(());
            };
            let line = mark.line() as u32;
            // (anchor, expanded size) of a node just completed; `nodes` counts every node as
            // it comes, an alias as the nodes it expands to.
            let done = match event {
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart => {
                    documents += 1;
                    if documents > self.max_documents {
                        return Err(over(
                            line,
                            format!(
                                "more than {} YAML documents in one file",
                                self.max_documents
                            ),
                            "--max-config-documents",
                        ));
                    }
                    None
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    nodes += 1;
                    open.push((anchor, 1));
                    if open.len() > self.max_depth {
                        return Err(over(
                            line,
                            format!("nesting deeper than {} levels", self.max_depth),
                            "--max-config-depth",
                        ));
                    }
                    None
                }
                Event::Scalar(_, _, anchor, _) => {
                    nodes += 1;
                    Some((anchor, 1))
                }
                Event::Alias(id) => {
                    let size = anchors.get(&id).copied().unwrap_or(1);
                    nodes = nodes.saturating_add(size);
                    Some((0, size))
                }
                Event::SequenceEnd | Event::MappingEnd => open.pop(),
                _ => None,
            };
            if nodes > self.max_nodes as u64 {
                return Err(over(
                    line,
                    format!(
                        "more than {} YAML nodes (aliases counted as what they expand to)",
                        self.max_nodes
                    ),
                    "--max-config-nodes",
                ));
            }
            if let Some((anchor, size)) = done {
                if anchor != 0 {
                    anchors.insert(anchor, size);
                }
                if let Some(parent) = open.last_mut() {
                    parent.1 = parent.1.saturating_add(size);
                }
            }
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The line where flow collections (`[`, `{`) nest deeper than `max`, skipping quoted
/// scalars and comments: one pass over the bytes.
fn flow_nesting_over(text: &str, max: usize) -> Option<u32> {
    let (mut depth, mut line) = (0usize, 1u32);
    let mut quote: Option<u8> = None;
    let mut prev = b'\n';
    let mut bytes = text.bytes().peekable();
    while let Some(c) = bytes.next() {
        if c == b'\n' {
            line += 1;
        }
        match quote {
            Some(q) if c == q => {
                // `''` inside a single-quoted scalar is an escaped quote.
                if q == b'\'' && bytes.peek() == Some(&b'\'') {
                    bytes.next();
                } else {
                    quote = None;
                }
            }
            Some(b'"') if c == b'\\' => {
                bytes.next();
            }
            Some(_) => {}
            None => match c {
                b'#' if prev.is_ascii_whitespace() => {
                    // A comment: to the end of the line.
                    for c in bytes.by_ref() {
                        if c == b'\n' {
                            line += 1;
                            break;
                        }
                    }
                    prev = b'\n';
                    continue;
                }
                b'"' | b'\'' if depth > 0 || matches!(prev, b' ' | b'\n' | b':' | b'-') => {
                    quote = Some(c);
                }
                // A collection starts a node: after blanks or an indicator, never inside a
                // plain scalar such as `x[`.
                b'[' | b'{'
                    if matches!(
                        prev,
                        b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[' | b'{' | b':' | b'-' | b'?'
                    ) =>
                {
                    depth += 1;
                    if depth > max {
                        return Some(line);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

static LIMITS: RwLock<Limits> = RwLock::new(Limits::DEFAULT);

/// Sets the limits every later [`parse_stream`] of this process applies (the binary does,
/// from its flags, once at start).
pub fn set_limits(limits: Limits) {
    *LIMITS.write().unwrap_or_else(|p| p.into_inner()) = limits;
}

/// The limits in force.
pub fn limits() -> Limits {
    *LIMITS.read().unwrap_or_else(|p| p.into_inner())
}

fn syntax_finding(file: &Arc<str>, text: &str, e: &serde_yaml::Error) -> Finding {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((0, 0));
    // A tab in the indentation is the most common cause, and the parser's words do not say so.
    let tab_at = text.lines().enumerate().find(|(_, l)| {
        l.chars()
            .take_while(|c| c.is_whitespace())
            .any(|c| c == '\t')
    });
    if let Some((i, _)) = tab_at
        && (line == 0 || (i as u32 + 1) <= line)
    {
        return Finding::error(
            Code::YamlSyntax,
            Location {
                file: file.clone(),
                line: i as u32 + 1,
                column: 1,
                path: String::new(),
            },
            "tabs are not allowed in YAML indentation: indent with spaces",
        );
    }
    Finding::error(
        Code::YamlSyntax,
        Location {
            file: file.clone(),
            line,
            column,
            path: String::new(),
        },
        format!("{e}: fix the YAML syntax at this position"),
    )
}

impl Document {
    /// A top-level string field such as `kind` or `apiVersion`.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(|v| v.as_str())
    }

    /// A string inside a mapping field, such as `metadata.name`.
    pub fn nested_str(&self, outer: &str, key: &str) -> Option<&str> {
        self.value
            .get(outer)
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
    }

    /// The items of a `kind: List` document, each locatable in the same file.
    pub fn list_items(&self) -> Vec<Document> {
        let Some(items) = self.value.get("items").and_then(|v| v.as_sequence()) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let prefix = join(&self.prefix, &format!("items[{i}]"));
                let start = self.positions.get(&prefix).unwrap_or(self.start);
                Document {
                    value: v.clone(),
                    file: self.file.clone(),
                    prefix,
                    positions: self.positions.clone(),
                    start,
                }
            })
            .collect()
    }

    /// The location of a field path relative to this document (`""` = the document itself).
    ///
    /// A path with no recorded position falls back to its nearest recorded parent.
    pub fn location(&self, path: &str) -> Location {
        let full = join(&self.prefix, path);
        let mut probe = full.as_str();
        let (line, column) = loop {
            if let Some(p) = self.positions.get(probe) {
                break p;
            }
            match parent(probe) {
                Some(up) if !up.is_empty() => probe = up,
                _ => break self.start,
            }
        };
        Location {
            file: self.file.clone(),
            line,
            column,
            path: path.to_string(),
        }
    }

    /// The file this document came from.
    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    /// Deserializes this document into `T`. Every field present in the YAML that `T` does not
    /// read is passed to `ignored` with its path; a type error is a `YamlSyntax` finding at the
    /// offending field.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        ignored: &mut dyn FnMut(String),
    ) -> Result<T, Finding> {
        let mut on_ignored = |p: serde_ignored::Path<'_>| ignored(ignored_path(&p));
        let de = serde_ignored::Deserializer::new(self.value.clone(), &mut on_ignored);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = error_path(e.path());
            let inner = e.into_inner().to_string();
            Finding::error(
                Code::YamlSyntax,
                self.location(&path),
                format!("`{path}`: {inner}: fix the field's value or its type"),
            )
        })
    }
}

impl Positions {
    fn get(&self, path: &str) -> Option<(u32, u32)> {
        self.0.get(path).copied()
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        return path.rfind('[').map(|i| &path[..i]);
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
}

fn error_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => push_key(&mut out, key),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => {
            let mut out = ignored_path(parent);
            push_key(&mut out, key);
            out
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

// === position map ===

type DocPositions = (HashMap<String, (u32, u32)>, (u32, u32));

/// Walks the event stream and records the position of every mapping key and sequence item.
/// On a parse error returns what it has; the caller then falls back to no positions.
fn locate_stream(text: &str) -> Vec<DocPositions> {
    let mut walker = Walker::default();
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut walker, true).is_err() {
        return Vec::new();
    }
    walker.docs
}

enum Frame {
    /// In a mapping; `key` is the pending key once read. `item` is the path of the sequence
    /// item this mapping is, until its first key gives that item its position.
    Map {
        path: String,
        key: Option<String>,
        item: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    docs: Vec<DocPositions>,
    current: HashMap<String, (u32, u32)>,
    start: (u32, u32),
    stack: Vec<Frame>,
}

impl Walker {
    /// The path of the node that is about to start; records a sequence item's position unless
    /// `defer` (a mapping item takes the position of its first key instead).
    fn enter(&mut self, mark: Marker, defer: bool) -> Option<String> {
        let pos = (mark.line() as u32, mark.col() as u32 + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                if !defer {
                    self.current.entry(p.clone()).or_insert(pos);
                }
                Some(p)
            }
            Some(Frame::Map { path, key, .. }) => match key.take() {
                // A value: its key's position was recorded when the key was read.
                Some(k) => {
                    let mut p = path.clone();
                    push_key(&mut p, &k);
                    Some(p)
                }
                None => None,
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.current = HashMap::new();
                self.stack.clear();
                self.start = (mark.line() as u32, mark.col() as u32 + 1);
            }
            Event::DocumentEnd => {
                let positions = std::mem::take(&mut self.current);
                self.docs.push((positions, self.start));
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                    item,
                }) = self.stack.last_mut()
                {
                    // A mapping key: record where it stands.
                    let pos = (mark.line() as u32, mark.col() as u32 + 1);
                    let mut p = path.clone();
                    push_key(&mut p, &value);
                    self.current.entry(p).or_insert(pos);
                    if let Some(item) = item.take() {
                        self.current.entry(item).or_insert(pos);
                    }
                    *key = Some(value);
                } else {
                    self.enter(mark, false);
                }
            }
            Event::Alias(_) => {
                self.enter(mark, false);
            }
            Event::MappingStart(..) => {
                let is_item = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                let path = self.enter(mark, true).unwrap_or_default();
                let item = is_item.then(|| path.clone());
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    item,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.enter(mark, false).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd => {
                // An empty mapping item never saw a key: fall back to its start.
                if let Some(Frame::Map {
                    item: Some(item), ..
                }) = self.stack.pop()
                {
                    self.current
                        .entry(item)
                        .or_insert((mark.line() as u32, mark.col() as u32 + 1));
                }
            }
            Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_fields() {
        let text =
            "a: 1\nspec:\n  http:\n  - route:\n    - weight: 90\n    - weight: 10\n---\nb: 2\n";
        let file: Arc<str> = "t.yaml".into();
        let docs = parse_stream(&file, text).unwrap();
        assert_eq!(docs.len(), 2);
        let loc = docs[0].location("spec.http[0].route[1].weight");
        assert_eq!((loc.line, loc.column), (6, 7));
        let loc = docs[0].location("spec.http[0].route[0]");
        assert_eq!((loc.line, loc.column), (5, 7));
        let loc = docs[1].location("b");
        assert_eq!((loc.line, loc.column), (8, 1));
        // Unknown paths fall back to the nearest parent.
        let loc = docs[0].location("spec.http[0].route[1].destination");
        assert_eq!(loc.line, 6);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let file: Arc<str> = "bad.yaml".into();
        let err = parse_stream(&file, "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(err.code, Code::YamlSyntax);
        assert!(err.location.line >= 2, "{err}");
        assert!(err.location.column > 0, "{err}");
    }

    #[test]
    fn type_error_points_at_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            spec: S,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            weight: i64,
        }
        let file: Arc<str> = "t.yaml".into();
        let docs = parse_stream(&file, "spec:\n  weight: lots\n").unwrap();
        let err = docs[0].deserialize::<T>(&mut |_| {}).unwrap_err();
        assert_eq!((err.location.line, err.location.column), (2, 3), "{err}");
        assert!(err.message.contains("spec.weight"), "{err}");
    }

    #[test]
    fn ignored_fields_are_reported() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let file: Arc<str> = "t.yaml".into();
        let docs = parse_stream(&file, "a: 1\nb:\n  c: 2\n").unwrap();
        let mut seen = Vec::new();
        docs[0].deserialize::<T>(&mut |p| seen.push(p)).unwrap();
        assert_eq!(seen, vec!["b".to_string()]);
    }

    fn refused(text: &str, limits: &Limits) -> Finding {
        let file: Arc<str> = "bomb.yaml".into();
        parse_stream_within(&file, text, limits).unwrap_err()
    }

    /// Billion laughs: nine levels of nine aliases, about a kilobyte of text that expands to
    /// 9^9 nodes. Refused from the event stream, before anything is expanded.
    #[test]
    fn an_alias_bomb_is_refused_before_it_is_expanded() {
        let mut text = String::from(
            "a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
        );
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let f = refused(&text, &Limits::DEFAULT);
        assert_eq!(f.code, Code::ConfigTooLarge, "{f}");
        assert!(f.message.contains("--max-config-nodes"), "{f}");
        assert!(f.message.contains("aliases"), "{f}");
        // The line where the expansion crossed the limit.
        assert!((5..=10).contains(&f.location.line), "{f}");
        assert_eq!(&*f.location.file, "bomb.yaml");
        // A handful of aliases is fine.
        let small = "a: &x {k: v}\nb: *x\nc: [*x, *x]\n";
        assert_eq!(
            parse_stream_within(&"ok.yaml".into(), small, &Limits::DEFAULT)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn nesting_beyond_the_depth_limit_is_refused() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let f = refused(&deep, &Limits::DEFAULT);
        assert_eq!(f.code, Code::ConfigTooLarge, "{f}");
        assert!(
            f.message.contains("deeper than 64") && f.message.contains("--max-config-depth"),
            "{f}"
        );
        let mut block = String::new();
        for i in 0..70 {
            block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
        }
        let f = refused(&block, &Limits::DEFAULT);
        assert!(f.message.contains("--max-config-depth"), "{f}");
        assert_eq!(f.location.line, 65, "the line of the 65th level: {f}");
        // Within the limit: parsed.
        let ok = format!("{}1{}", "[".repeat(60), "]".repeat(60));
        assert!(parse_stream_within(&"ok.yaml".into(), &ok, &Limits::DEFAULT).is_ok());
        // 100,000 levels (200 KB) are refused from the bytes, before the scanner's quadratic
        // look-ahead; brackets in quotes and comments do not count.
        let bomb = format!("a: 1\nb: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let f = refused(&bomb, &Limits::DEFAULT);
        assert!(f.message.contains("--max-config-depth"), "{f}");
        assert_eq!(f.location.line, 2, "{f}");
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\nc: x[{{\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert!(parse_stream_within(&"ok.yaml".into(), &quoted, &Limits::DEFAULT).is_ok());
    }

    #[test]
    fn size_and_document_counts_are_capped() {
        let mut limits = Limits::DEFAULT;
        limits.max_bytes = 100;
        let f = refused(&"a: 1\n".repeat(30), &limits);
        assert!(
            f.message.contains("150 bytes") && f.message.contains("--max-config-bytes"),
            "{f}"
        );
        let mut limits = Limits::DEFAULT;
        limits.max_documents = 3;
        let f = refused(&"a: 1\n---\n".repeat(5), &limits);
        assert!(f.message.contains("more than 3 YAML documents"), "{f}");
        assert!(f.message.contains("--max-config-documents"), "{f}");
        assert_eq!(f.location.line, 6, "the `---` of the fourth document: {f}");
    }
}
