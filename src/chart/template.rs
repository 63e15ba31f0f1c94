//! A Go `text/template` engine for the subset of the language (and of Helm's sprig functions)
//! that `charts/cnnpc` uses, so the chart renders without a `helm` binary.
//!
//! Supported: text with `{{ }}` actions, `{{-`/`-}}` whitespace trimming, `{{/* comments */}}`,
//! pipelines (`a | f b`), parenthesised sub-pipelines, fields (`.Values.x.y`), variables
//! (`$`, `$x := …`, `$x = …`, `$x.field`), literals (strings, raw strings, numbers, `true`,
//! `false`, `nil`), `if`/`else if`/`else`, `with`/`else`, `range` (lists and maps, with
//! `$i, $v :=`, maps in sorted key order) with `else`, `define`, `template`, and the functions in
//! [`FUNCTIONS`]. Go semantics are kept where they matter for YAML: truthiness, a field of a
//! missing map key is `nil` but a field *of* `nil` is an error, printing `nil` prints nothing
//! (Helm's `<no value>` replacement), printing a map or list is an error (use `toYaml`).
//! Anything outside the subset is a parse or render error, never silently different output.

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Every function the engine knows; a chart template using any other name fails to render.
pub const FUNCTIONS: &[&str] = &[
    "include",
    "toYaml",
    "toJson",
    "nindent",
    "indent",
    "quote",
    "default",
    "empty",
    "required",
    "trunc",
    "trimSuffix",
    "printf",
    "eq",
    "ne",
    "not",
    "and",
    "or",
    "list",
    "len",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Num(Number),
    Ident(String),
    /// `.a.b` (empty: the dot itself).
    Field(Vec<String>),
    /// `$name.a.b` (`$` alone: name "").
    Var(String, Vec<String>),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    Sub(Box<Pipe>),
}

#[derive(Debug, Clone)]
struct Pipe {
    decl: Vec<String>,
    declare: bool,
    cmds: Vec<Vec<Arg>>,
    line: usize,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Out(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    Template(String, Option<Pipe>, usize),
}

enum Item {
    Text(String),
    Action(Vec<Tok>, usize),
}

/// A set of parsed templates sharing one namespace of `define`d names, like Helm's.
#[derive(Default)]
pub struct Templates {
    trees: HashMap<String, Vec<Node>>,
    /// Files readable through `.Files.Get` (path relative to the chart → content).
    files: HashMap<String, String>,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits the source into text and the tokens of each action, applying the trim markers.
fn lex(src: &str, name: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    let line_of = |at: usize| src[..at].matches('\n').count() + 1;
    while pos <= src.len() {
        let Some(rel) = src[pos..].find("{{") else {
            let mut text = &src[pos..];
            if trim_next {
                text = text.trim_start_matches(is_space);
            }
            if !text.is_empty() {
                items.push(Item::Text(text.to_string()));
            }
            break;
        };
        let start = pos + rel;
        let mut text = &src[pos..start];
        if trim_next {
            text = text.trim_start_matches(is_space);
        }
        let mut body_start = start + 2;
        let after = &src[body_start..];
        if after.starts_with('-') && after[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space);
            body_start += 1;
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let line = line_of(start);
        let end = find_action_end(src, body_start)
            .ok_or_else(|| anyhow!("{name}:{line}: unclosed action"))?;
        let mut body = &src[body_start..end];
        trim_next = false;
        if body.ends_with('-') && body[..body.len() - 1].ends_with(is_space) {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let trimmed = body.trim_matches(is_space);
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") {
                bail!("{name}:{line}: unclosed comment");
            }
        } else {
            let toks = tokenize(trimmed).with_context(|| format!("{name}:{line}"))?;
            if toks.is_empty() {
                bail!("{name}:{line}: empty action");
            }
            items.push(Item::Action(toks, line));
        }
        pos = end + 2;
    }
    Ok(items)
}

/// The index of the `}}` closing an action whose body starts at `from`, skipping string
/// literals and comments.
fn find_action_end(src: &str, from: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = from;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'/' if b[i + 1] == b'*' => {
                i += src[i..].find("*/")? + 1;
            }
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn tokenize(s: &str) -> Result<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let read_ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && ident_char(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let read_chain = |i: &mut usize, first: Option<String>| -> Vec<String> {
        let mut chain: Vec<String> = first.into_iter().collect();
        while *i + 1 < chars.len() && chars[*i] == '.' && ident_char(chars[*i + 1]) {
            *i += 1;
            let start = *i;
            while *i < chars.len() && ident_char(chars[*i]) {
                *i += 1;
            }
            chain.push(chars[start..*i].iter().collect());
        }
        chain
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if is_space(c) => i += 1,
            '|' => {
                toks.push(Tok::Pipe);
                i += 1
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1
            }
            '"' => {
                let mut out = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => bail!("unterminated string"),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            out.push(match chars.get(i) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                other => bail!("unsupported escape \\{other:?}"),
                            });
                        }
                        Some(&c) => out.push(c),
                    }
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Str(out));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| anyhow!("unterminated raw string"))?;
                toks.push(Tok::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '.' => {
                if chars.get(i + 1).is_some_and(|&c| ident_char(c)) {
                    toks.push(Tok::Field(read_chain(&mut i, None)));
                } else {
                    toks.push(Tok::Field(Vec::new()));
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                let name = read_ident(&mut i);
                toks.push(Tok::Var(name, read_chain(&mut i, None)));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = if let Ok(n) = text.parse::<i64>() {
                    Number::from(n)
                } else {
                    let f: f64 = text.parse().map_err(|_| anyhow!("bad number {text}"))?;
                    Number::from_f64(f).ok_or_else(|| anyhow!("bad number {text}"))?
                };
                toks.push(Tok::Num(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let name = read_ident(&mut i);
                toks.push(Tok::Ident(name));
            }
            other => bail!("unexpected character {other:?}"),
        }
    }
    Ok(toks)
}

fn parse_pipe(toks: &[Tok], line: usize) -> Result<Pipe> {
    let mut decl = Vec::new();
    let mut declare = false;
    let mut rest = toks;
    // `$a := …`, `$a = …`, `$i, $v := …`
    let assign_at = toks
        .iter()
        .position(|t| matches!(t, Tok::Declare | Tok::Assign));
    if let Some(at) = assign_at {
        let lhs = &toks[..at];
        let all_vars = lhs.iter().enumerate().all(|(k, t)| match t {
            Tok::Var(_, path) => k % 2 == 0 && path.is_empty(),
            Tok::Comma => k % 2 == 1,
            _ => false,
        });
        if all_vars && !lhs.is_empty() {
            for t in lhs {
                if let Tok::Var(name, _) = t {
                    decl.push(name.clone());
                }
            }
            declare = toks[at] == Tok::Declare;
            rest = &toks[at + 1..];
        }
    }
    let (cmds, used) = parse_cmds(rest, line)?;
    if used != rest.len() {
        bail!("line {line}: unexpected ')'");
    }
    if cmds.is_empty() || cmds.iter().any(|c| c.is_empty()) {
        bail!("line {line}: missing command in pipeline");
    }
    Ok(Pipe {
        decl,
        declare,
        cmds,
        line,
    })
}

/// Commands separated by `|` up to an unmatched `)` or the end; returns them and the tokens used.
fn parse_cmds(toks: &[Tok], line: usize) -> Result<(Vec<Vec<Arg>>, usize)> {
    let mut cmds = vec![Vec::new()];
    let mut i = 0;
    while i < toks.len() {
        let arg = match &toks[i] {
            Tok::RParen => break,
            Tok::Pipe => {
                cmds.push(Vec::new());
                i += 1;
                continue;
            }
            Tok::LParen => {
                let (sub, used) = parse_cmds(&toks[i + 1..], line)?;
                if toks.get(i + 1 + used) != Some(&Tok::RParen) {
                    bail!("line {line}: unclosed '('");
                }
                i += used + 1;
                Arg::Sub(Box::new(Pipe {
                    decl: Vec::new(),
                    declare: false,
                    cmds: sub,
                    line,
                }))
            }
            Tok::Str(s) => Arg::Lit(Value::String(s.clone())),
            Tok::Num(n) => Arg::Lit(Value::Number(n.clone())),
            Tok::Ident(id) => match id.as_str() {
                "true" => Arg::Lit(Value::Bool(true)),
                "false" => Arg::Lit(Value::Bool(false)),
                "nil" => Arg::Lit(Value::Null),
                f if FUNCTIONS.contains(&f) => Arg::Func(f.to_string()),
                f => bail!("line {line}: function {f:?} not defined"),
            },
            Tok::Field(p) => Arg::Field(p.clone()),
            Tok::Var(n, p) => Arg::Var(n.clone(), p.clone()),
            t => bail!("line {line}: unexpected {t:?}"),
        };
        cmds.last_mut().expect("never empty").push(arg);
        i += 1;
    }
    Ok((cmds, i))
}

struct Parser<'a> {
    items: &'a [Item],
    at: usize,
    name: &'a str,
    defines: Vec<(String, Vec<Node>)>,
}

/// What ended a list: `end`, or `else` with the tokens after it.
enum Stop {
    Eof,
    End,
    Else(Vec<Tok>, usize),
}

impl Parser<'_> {
    fn list(&mut self) -> Result<(Vec<Node>, Stop)> {
        let mut nodes = Vec::new();
        while self.at < self.items.len() {
            let item = &self.items[self.at];
            self.at += 1;
            let (toks, line) = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t.clone()));
                    continue;
                }
                Item::Action(toks, line) => (toks, *line),
            };
            let kw = match &toks[0] {
                Tok::Ident(k) => k.as_str(),
                _ => "",
            };
            let rest = &toks[1..];
            match kw {
                "end" => return Ok((nodes, Stop::End)),
                "else" => return Ok((nodes, Stop::Else(rest.to_vec(), line))),
                "if" => {
                    let mut branches = vec![(parse_pipe(rest, line)?, Vec::new())];
                    let mut otherwise = Vec::new();
                    loop {
                        let (body, stop) = self.list()?;
                        match stop {
                            Stop::End => {
                                branches.last_mut().expect("one branch").1 = body;
                                break;
                            }
                            Stop::Else(toks, l)
                                if toks.first() == Some(&Tok::Ident("if".into())) =>
                            {
                                branches.last_mut().expect("one branch").1 = body;
                                branches.push((parse_pipe(&toks[1..], l)?, Vec::new()));
                            }
                            Stop::Else(toks, l) if toks.is_empty() => {
                                branches.last_mut().expect("one branch").1 = body;
                                otherwise = self.expect_end(l)?;
                                break;
                            }
                            Stop::Else(_, l) => bail!("{}:{l}: unsupported else form", self.name),
                            Stop::Eof => bail!("{}:{line}: unclosed if", self.name),
                        }
                    }
                    nodes.push(Node::If(branches, otherwise));
                }
                "with" | "range" => {
                    let pipe = parse_pipe(rest, line)?;
                    let (body, stop) = self.list()?;
                    let otherwise = match stop {
                        Stop::End => Vec::new(),
                        Stop::Else(toks, l) if toks.is_empty() => self.expect_end(l)?,
                        Stop::Else(_, l) => bail!("{}:{l}: unsupported else form", self.name),
                        Stop::Eof => bail!("{}:{line}: unclosed {kw}", self.name),
                    };
                    nodes.push(if kw == "with" {
                        Node::With(pipe, body, otherwise)
                    } else {
                        Node::Range(pipe, body, otherwise)
                    });
                }
                "define" => {
                    let [Tok::Str(name)] = rest else {
                        bail!("{}:{line}: define needs one string", self.name);
                    };
                    let (body, stop) = self.list()?;
                    if !matches!(stop, Stop::End) {
                        bail!("{}:{line}: unclosed define", self.name);
                    }
                    self.defines.push((name.clone(), body));
                }
                "template" => {
                    let Some(Tok::Str(name)) = rest.first() else {
                        bail!("{}:{line}: template needs a name", self.name);
                    };
                    let pipe = if rest.len() > 1 {
                        Some(parse_pipe(&rest[1..], line)?)
                    } else {
                        None
                    };
                    nodes.push(Node::Template(name.clone(), pipe, line));
                }
                "block" | "break" | "continue" => {
                    bail!("{}:{line}: {kw} is outside the supported subset", self.name)
                }
                _ => nodes.push(Node::Out(parse_pipe(toks, line)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn expect_end(&mut self, line: usize) -> Result<Vec<Node>> {
        let (body, stop) = self.list()?;
        match stop {
            Stop::End => Ok(body),
            _ => bail!("{}:{line}: else without end", self.name),
        }
    }
}

/// Go's notion of a true value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How `{{ x }}` prints a value (Helm prints a missing value as nothing).
fn print(v: &Value) -> Result<String> {
    Ok(match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_string(n),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => {
            bail!("printing a list or map gives Go syntax, not YAML: use toYaml")
        }
    })
}

fn number_string(n: &Number) -> String {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Keys sorted at every level, as Helm's `toYaml` (sigs.k8s.io/yaml) writes them.
fn sorted_yaml(v: &Value) -> serde_yaml::Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let mut m = serde_yaml::Mapping::new();
            for k in keys {
                m.insert(serde_yaml::Value::String(k.clone()), sorted_yaml(&o[k]));
            }
            serde_yaml::Value::Mapping(m)
        }
        Value::Array(a) => serde_yaml::Value::Sequence(a.iter().map(sorted_yaml).collect()),
        other => serde_yaml::to_value(other).expect("a JSON scalar is a YAML scalar"),
    }
}

/// Go's `%q` for the strings a chart quotes (JSON escaping agrees with it on these).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn as_int(v: &Value, f: &str) -> Result<i64> {
    v.as_f64()
        .map(|x| x as i64)
        .ok_or_else(|| anyhow!("{f}: expected a number, got {v}"))
}

fn as_str<'v>(v: &'v Value, f: &str) -> Result<&'v str> {
    v.as_str()
        .ok_or_else(|| anyhow!("{f}: expected a string, got {v}"))
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn to_string_loose(v: &Value) -> Result<String> {
    match v {
        Value::Array(_) | Value::Object(_) => Ok(v.to_string()),
        other => print(other),
    }
}

fn printf(args: &[Value]) -> Result<String> {
    let fmt = as_str(args.first().unwrap_or(&Value::Null), "printf")?;
    let mut rest = args[1..].iter();
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v' | 'q')) => {
                let v = rest
                    .next()
                    .ok_or_else(|| anyhow!("printf: missing argument for %{verb}"))?;
                let s = to_string_loose(v)?;
                out.push_str(&if verb == 'q' { go_quote(&s) } else { s });
            }
            other => bail!("printf: verb %{other:?} is outside the supported subset"),
        }
    }
    Ok(out)
}

struct Exec<'t> {
    t: &'t Templates,
    depth: usize,
}

impl Templates {
    pub fn new() -> Templates {
        Templates::default()
    }

    /// Parses one template file; its `define`s join the shared namespace, and the file itself is
    /// available under `name`.
    pub fn add(&mut self, name: &str, src: &str) -> Result<()> {
        let items = lex(src, name)?;
        let mut p = Parser {
            items: &items,
            at: 0,
            name,
            defines: Vec::new(),
        };
        let (nodes, stop) = p.list()?;
        if !matches!(stop, Stop::Eof) {
            bail!("{name}: unexpected end or else");
        }
        for (def, body) in p.defines {
            self.trees.insert(def, body);
        }
        self.trees.insert(name.to_string(), nodes);
        Ok(())
    }

    /// Makes a file readable by `.Files.Get`.
    pub fn add_file(&mut self, path: &str, content: String) {
        self.files.insert(path.to_string(), content);
    }

    /// Renders the template `name` with `data` as both `.` and `$`.
    pub fn render(&self, name: &str, data: &Value) -> Result<String> {
        Exec { t: self, depth: 0 }.template(name, data)
    }
}

impl Exec<'_> {
    fn template(&mut self, name: &str, data: &Value) -> Result<String> {
        let nodes = self
            .t
            .trees
            .get(name)
            .ok_or_else(|| anyhow!("no template named {name:?}"))?;
        self.depth += 1;
        if self.depth > 50 {
            bail!("template recursion deeper than 50 at {name:?}");
        }
        let mut vars = vec![(String::new(), data.clone())];
        let mut out = String::new();
        let r = self.list(nodes, data, &mut vars, &mut out);
        self.depth -= 1;
        r.with_context(|| format!("in template {name:?}"))?;
        Ok(out)
    }

    fn list(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        vars: &mut Vec<(String, Value)>,
        out: &mut String,
    ) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Out(p) => {
                    let v = self.pipe(p, dot, vars)?;
                    if p.decl.is_empty() {
                        out.push_str(&print(&v).with_context(|| format!("line {}", p.line))?);
                    } else {
                        self.bind(p, v, vars)?;
                    }
                }
                Node::If(branches, otherwise) => {
                    let mark = vars.len();
                    let mut taken = false;
                    for (cond, body) in branches {
                        let v = self.pipe(cond, dot, vars)?;
                        if truthy(&v) {
                            self.bind(cond, v, vars)?;
                            self.list(body, dot, vars, out)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.list(otherwise, dot, vars, out)?;
                    }
                    vars.truncate(mark);
                }
                Node::With(p, body, otherwise) => {
                    let mark = vars.len();
                    let v = self.pipe(p, dot, vars)?;
                    if truthy(&v) {
                        self.bind(p, v.clone(), vars)?;
                        self.list(body, &v, vars, out)?;
                    } else {
                        self.list(otherwise, dot, vars, out)?;
                    }
                    vars.truncate(mark);
                }
                Node::Range(p, body, otherwise) => {
                    let v = self.pipe(p, dot, vars)?;
                    let entries: Vec<(Value, Value)> = match &v {
                        Value::Array(a) => a
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Value::from(i), x.clone()))
                            .collect(),
                        Value::Object(o) => {
                            let mut keys: Vec<&String> = o.keys().collect();
                            keys.sort();
                            keys.into_iter()
                                .map(|k| (Value::String(k.clone()), o[k].clone()))
                                .collect()
                        }
                        Value::Null => Vec::new(),
                        other => bail!("line {}: range can't iterate over {other}", p.line),
                    };
                    if entries.is_empty() {
                        self.list(otherwise, dot, vars, out)?;
                    }
                    for (k, x) in entries {
                        let mark = vars.len();
                        match p.decl.as_slice() {
                            [] => {}
                            [v1] => vars.push((v1.clone(), x.clone())),
                            [v1, v2] => {
                                vars.push((v1.clone(), k));
                                vars.push((v2.clone(), x.clone()));
                            }
                            _ => bail!("line {}: too many range variables", p.line),
                        }
                        self.list(body, &x, vars, out)?;
                        vars.truncate(mark);
                    }
                }
                Node::Template(name, p, line) => {
                    let data = match p {
                        Some(p) => self.pipe(p, dot, vars)?,
                        None => Value::Null,
                    };
                    let s = self
                        .template(name, &data)
                        .with_context(|| format!("line {line}"))?;
                    out.push_str(&s);
                }
            }
        }
        Ok(())
    }

    fn bind(&self, p: &Pipe, v: Value, vars: &mut Vec<(String, Value)>) -> Result<()> {
        match p.decl.as_slice() {
            [] => Ok(()),
            [name] if p.declare => {
                vars.push((name.clone(), v));
                Ok(())
            }
            [name] => {
                let slot = vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| anyhow!("line {}: undefined variable ${name}", p.line))?;
                slot.1 = v;
                Ok(())
            }
            _ => bail!("line {}: too many declarations", p.line),
        }
    }

    fn pipe(&mut self, p: &Pipe, dot: &Value, vars: &mut Vec<(String, Value)>) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            prev = Some(
                self.cmd(cmd, dot, vars, prev)
                    .with_context(|| format!("line {}", p.line))?,
            );
        }
        Ok(prev.expect("a pipeline has a command"))
    }

    fn arg(&mut self, a: &Arg, dot: &Value, vars: &mut Vec<(String, Value)>) -> Result<Value> {
        match a {
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Field(path) => field(dot, path),
            Arg::Var(name, path) => {
                let v = vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| anyhow!("undefined variable ${name}"))?;
                field(v, path)
            }
            Arg::Sub(p) => self.pipe(p, dot, vars),
            Arg::Func(f) => self.call(f, Vec::new()),
        }
    }

    fn cmd(
        &mut self,
        cmd: &[Arg],
        dot: &Value,
        vars: &mut Vec<(String, Value)>,
        prev: Option<Value>,
    ) -> Result<Value> {
        let mut args = Vec::new();
        for a in &cmd[1..] {
            args.push(self.arg(a, dot, vars)?);
        }
        args.extend(prev);
        match &cmd[0] {
            Arg::Func(f) => self.call(f, args),
            // `.Files.Get "path"`: the one method call the chart makes.
            Arg::Field(path) | Arg::Var(_, path)
                if path.ends_with(&["Files".into(), "Get".into()]) =>
            {
                let [Value::String(p)] = args.as_slice() else {
                    bail!(".Files.Get needs one path");
                };
                self.t
                    .files
                    .get(p)
                    .map(|s| Value::String(s.clone()))
                    .ok_or_else(|| anyhow!(".Files.Get: no file {p:?} in the chart"))
            }
            a if args.is_empty() => self.arg(a, dot, vars),
            a => bail!("can't give arguments to non-function {a:?}"),
        }
    }

    fn call(&mut self, f: &str, args: Vec<Value>) -> Result<Value> {
        let n = args.len();
        let arity = |want: usize| -> Result<()> {
            if n != want {
                bail!("{f}: wants {want} arguments, got {n}");
            }
            Ok(())
        };
        Ok(match f {
            "include" => {
                arity(2)?;
                Value::String(self.template(as_str(&args[0], f)?, &args[1])?)
            }
            "toYaml" => {
                arity(1)?;
                let s = serde_yaml::to_string(&sorted_yaml(&args[0]))?;
                Value::String(s.trim_end_matches('\n').to_string())
            }
            "toJson" => {
                arity(1)?;
                Value::String(serde_json::to_string(&args[0])?)
            }
            "indent" | "nindent" => {
                arity(2)?;
                let pad = " ".repeat(as_int(&args[0], f)?.max(0) as usize);
                let s = to_string_loose(&args[1])?;
                let body = format!("{pad}{}", s.replace('\n', &format!("\n{pad}")));
                Value::String(if f == "nindent" {
                    format!("\n{body}")
                } else {
                    body
                })
            }
            "quote" => Value::String(
                args.iter()
                    .filter(|v| !v.is_null())
                    .map(|v| to_string_loose(v).map(|s| go_quote(&s)))
                    .collect::<Result<Vec<_>>>()?
                    .join(" "),
            ),
            "default" => match args.as_slice() {
                [d] => d.clone(),
                [d, v] => {
                    if truthy(v) {
                        v.clone()
                    } else {
                        d.clone()
                    }
                }
                _ => bail!("default: wants 1 or 2 arguments, got {n}"),
            },
            "empty" => {
                arity(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "required" => {
                arity(2)?;
                match &args[1] {
                    Value::Null => bail!("{}", as_str(&args[0], f)?),
                    Value::String(s) if s.is_empty() => bail!("{}", as_str(&args[0], f)?),
                    v => v.clone(),
                }
            }
            "trunc" => {
                arity(2)?;
                let k = as_int(&args[0], f)?;
                let s = as_str(&args[1], f)?;
                Value::String(if k >= 0 {
                    s.chars().take(k as usize).collect()
                } else {
                    let len = s.chars().count();
                    s.chars()
                        .skip(len.saturating_sub(k.unsigned_abs() as usize))
                        .collect()
                })
            }
            "trimSuffix" => {
                arity(2)?;
                let suffix = as_str(&args[0], f)?;
                let s = as_str(&args[1], f)?;
                Value::String(s.strip_suffix(suffix).unwrap_or(s).to_string())
            }
            "printf" => Value::String(printf(&args)?),
            "eq" => {
                if n < 2 {
                    bail!("eq: wants at least 2 arguments");
                }
                Value::Bool(args[1..].iter().any(|b| values_equal(&args[0], b)))
            }
            "ne" => {
                arity(2)?;
                Value::Bool(!values_equal(&args[0], &args[1]))
            }
            "not" => {
                arity(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "and" | "or" => {
                if n == 0 {
                    bail!("{f}: wants arguments");
                }
                let want = f == "or";
                args.iter()
                    .find(|v| truthy(v) == want)
                    .unwrap_or(&args[n - 1])
                    .clone()
            }
            "list" => Value::Array(args),
            "len" => {
                arity(1)?;
                Value::from(match &args[0] {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    Value::Null => 0,
                    other => bail!("len of {other}"),
                })
            }
            other => bail!("function {other:?} not defined"),
        })
    }
}

fn field(v: &Value, path: &[String]) -> Result<Value> {
    let mut cur = v;
    let null = Value::Null;
    for (i, key) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => m.get(key).unwrap_or(&null),
            Value::Null => bail!("nil pointer evaluating .{}", path[..=i].join(".")),
            other => bail!("can't evaluate field {key} in {other}"),
        };
    }
    Ok(cur.clone())
}

/// Deep-merges `over` into `base` like Helm merges `--values` files into the chart's values:
/// maps merge key by key, anything else replaces, and a `null` removes the key.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        // No overrides at all (a null inside a map removes that key, below).
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    merge_values(slot, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// A map from a list of pairs, for building a template's data in Rust.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, data: Value) -> Result<String> {
        let mut t = Templates::new();
        t.add("t", src)?;
        t.render("t", &data)
    }

    #[test]
    fn trim_markers_and_comments() {
        let out = render(
            "a  \n  {{- .x -}}  \n b {{/* gone */}}c{{- /* also */ -}} d",
            json!({"x": 1}),
        )
        .unwrap();
        assert_eq!(out, "a1b cd");
    }

    #[test]
    fn include_pipes_into_nindent_and_defines_are_shared() {
        let mut t = Templates::new();
        t.add(
            "_h.tpl",
            "{{- define \"labels\" -}}\na: {{ .a | quote }}\nb: x\n{{- end }}",
        )
        .unwrap();
        t.add(
            "m",
            "m:\n  labels:\n    {{- include \"labels\" . | nindent 4 }}\n",
        )
        .unwrap();
        let out = t.render("m", &json!({"a": "v"})).unwrap();
        assert_eq!(out, "m:\n  labels:\n    a: \"v\"\n    b: x\n");
    }

    #[test]
    fn if_else_if_with_range_and_variables() {
        let src = "{{ $n := .name }}{{ range $k, $v := .m }}{{ $k }}={{ $v }},{{ end }}\
                   {{ if .no }}A{{ else if .yes }}B{{ else }}C{{ end }}\
                   {{ with .w }}{{ .z }}{{ $n }}{{ else }}none{{ end }}\
                   {{ range .empty }}x{{ else }}E{{ end }}{{ range .l }}[{{ . }}]{{ end }}";
        let out = render(
            src,
            json!({"name": "N", "m": {"b": 2, "a": 1}, "yes": true, "w": {"z": "Z"},
                   "empty": [], "l": ["p", "q"]}),
        )
        .unwrap();
        assert_eq!(out, "a=1,b=2,BZNE[p][q]");
    }

    #[test]
    fn sprig_subset() {
        let out = render(
            "{{ .missing | default \"d\" }} {{ \"abcdef\" | trunc 3 }} {{ \"x-y\" | trimSuffix \"-y\" }} \
             {{ printf \"%s-%d\" \"a\" 7 }} {{ toYaml .m | indent 2 }} {{ eq .n 3 }} {{ and 1 0 }} {{ or 0 \"o\" }} \
             {{ not .f }} {{ quote 5 }} {{ .n }} {{ .f }}",
            json!({"m": {"k": [1, 2]}, "n": 3.0, "f": 0.5}),
        )
        .unwrap();
        assert_eq!(
            out,
            "d abc x a-7   k:\n  - 1\n  - 2 true 0 o false \"5\" 3 0.5"
        );
    }

    #[test]
    fn strict_where_helm_is_strict_and_where_printing_would_lie() {
        assert!(
            format!("{:#}", render("{{ .a.b }}", json!({})).unwrap_err()).contains("nil pointer")
        );
        assert!(format!(
            "{:#}",
            render("{{ .m }}", json!({"m": {"k": 1}})).unwrap_err()
        )
        .contains("toYaml"));
        assert!(render("{{ nosuchfunc 1 }}", json!({})).is_err());
        assert!(render("{{ if .x }}unclosed", json!({})).is_err());
        assert!(format!(
            "{:#}",
            render("{{ required \"need x\" .x }}", json!({})).unwrap_err()
        )
        .contains("need x"));
        assert_eq!(render("{{ .a.missing }}", json!({"a": {}})).unwrap(), "");
    }

    #[test]
    fn merge_like_helm() {
        let mut base = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "gone": 1});
        merge_values(&mut base, &json!({"a": {"c": 3}, "l": [9], "gone": null}));
        assert_eq!(base, json!({"a": {"b": 1, "c": 3}, "l": [9]}));
        merge_values(&mut base, &Value::Null);
        assert_eq!(base, json!({"a": {"b": 1, "c": 3}, "l": [9]}));
    }
}
