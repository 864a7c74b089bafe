//! A minimal evaluator of the Sigma subset the shipped rules
//! (`policies/detections/`) use, over OCSF events (`export::ocsf`). No
//! Sigma crate on crates.io builds offline and is kept, so this covers,
//! and refuses with an error anything beyond:
//! - `detection:` search identifiers, each a map (every field matches) or
//!   a list of maps (any map matches);
//! - field names as dotted paths into the event (`dst_endpoint.port`);
//! - values: a scalar or a list (any matches); strings compare without
//!   case (Sigma's default), numbers as numbers; modifiers `contains`,
//!   `startswith`, `endswith`;
//! - `condition:` identifiers with `and`, `or`, `not` and parentheses.
//!
//! Not supported: wildcards in values, `1 of`/`all of`, aggregations
//! (`| count()`), the `all`, `re`, `cidr` and `base64` modifiers,
//! correlation rules.

use serde_json::Value;
use serde_yaml::Value as Yaml;

#[derive(Debug, thiserror::Error)]
pub enum SigmaError {
    #[error("sigma rule {file}: {message}")]
    Rule { file: String, message: String },
}

/// One parsed rule.
#[derive(Debug)]
pub struct Rule {
    pub title: String,
    pub level: String,
    searches: Vec<(String, Search)>,
    condition: Cond,
}

#[derive(Debug)]
enum Search {
    /// Any of these maps; each map: every field matches.
    AnyOf(Vec<Vec<FieldMatch>>),
}

#[derive(Debug)]
struct FieldMatch {
    path: Vec<String>,
    op: Op,
    values: Vec<Yaml>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
enum Cond {
    Id(usize),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl Rule {
    /// Parses a rule; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Rule, SigmaError> {
        let err = |message: String| SigmaError::Rule {
            file: file.to_string(),
            message,
        };
        let doc: Yaml = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
        let text_of = |k: &str| doc.get(k).and_then(Yaml::as_str).map(str::to_string);
        let title = text_of("title").ok_or_else(|| err("no title".into()))?;
        let level = text_of("level").unwrap_or_else(|| "medium".into());
        let detection = doc
            .get("detection")
            .and_then(Yaml::as_mapping)
            .ok_or_else(|| err("no detection mapping".into()))?;
        let mut searches = Vec::new();
        let mut condition = None;
        for (k, v) in detection {
            let name = k.as_str().ok_or_else(|| err("a non-string key".into()))?;
            if name == "condition" {
                condition = Some(
                    v.as_str()
                        .ok_or_else(|| err("condition must be one string".into()))?
                        .to_string(),
                );
                continue;
            }
            let maps: Vec<&serde_yaml::Mapping> = match v {
                Yaml::Mapping(m) => vec![m],
                Yaml::Sequence(items) => items
                    .iter()
                    .map(|i| {
                        i.as_mapping()
                            .ok_or_else(|| err(format!("{name}: keyword lists are not supported")))
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(err(format!("{name}: must be a map or a list of maps"))),
            };
            let mut any = Vec::new();
            for m in maps {
                let mut all = Vec::new();
                for (field, value) in m {
                    let field = field
                        .as_str()
                        .ok_or_else(|| err(format!("{name}: a non-string field")))?;
                    let (path, op) = match field.split_once('|') {
                        None => (field, Op::Equals),
                        Some((p, "contains")) => (p, Op::Contains),
                        Some((p, "startswith")) => (p, Op::StartsWith),
                        Some((p, "endswith")) => (p, Op::EndsWith),
                        Some((_, m)) => {
                            return Err(err(format!("{name}: modifier `{m}` is not supported")))
                        }
                    };
                    let values = match value {
                        Yaml::Sequence(vs) => vs.clone(),
                        v => vec![v.clone()],
                    };
                    if values
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| s.contains('*')))
                    {
                        return Err(err(format!("{name}: wildcards are not supported")));
                    }
                    all.push(FieldMatch {
                        path: path.split('.').map(str::to_string).collect(),
                        op,
                        values,
                    });
                }
                any.push(all);
            }
            searches.push((name.to_string(), Search::AnyOf(any)));
        }
        let condition = condition.ok_or_else(|| err("no condition".into()))?;
        let names: Vec<&str> = searches.iter().map(|(n, _)| n.as_str()).collect();
        let condition = parse_condition(&condition, &names).map_err(err)?;
        Ok(Rule {
            title,
            level,
            searches,
            condition,
        })
    }

    /// Whether the OCSF event matches.
    pub fn matches(&self, event: &Value) -> bool {
        eval(&self.condition, &|i| {
            let Search::AnyOf(any) = &self.searches[i].1;
            any.iter()
                .any(|all| all.iter().all(|f| field_matches(f, event)))
        })
    }
}

fn field_matches(f: &FieldMatch, event: &Value) -> bool {
    let mut v = event;
    for p in &f.path {
        match v.get(p) {
            Some(next) => v = next,
            None => return false,
        }
    }
    f.values.iter().any(|want| match (want, v) {
        (Yaml::Number(n), Value::Number(got)) => n.as_f64() == got.as_f64(),
        (Yaml::Bool(b), Value::Bool(got)) => b == got,
        (want, got) => {
            let want = match want {
                Yaml::String(s) => s.to_lowercase(),
                Yaml::Number(n) => n.to_string(),
                Yaml::Bool(b) => b.to_string(),
                _ => return false,
            };
            let got = match got {
                Value::String(s) => s.to_lowercase(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return false,
            };
            match f.op {
                Op::Equals => got == want,
                Op::Contains => got.contains(&want),
                Op::StartsWith => got.starts_with(&want),
                Op::EndsWith => got.ends_with(&want),
            }
        }
    })
}

fn eval(c: &Cond, search: &dyn Fn(usize) -> bool) -> bool {
    match c {
        Cond::Id(i) => search(*i),
        Cond::Not(c) => !eval(c, search),
        Cond::And(a, b) => eval(a, search) && eval(b, search),
        Cond::Or(a, b) => eval(a, search) || eval(b, search),
    }
}

/// `or` binds loosest, then `and`, then `not`.
fn parse_condition(text: &str, names: &[&str]) -> Result<Cond, String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let c = or_expr(&tokens, &mut pos, names)?;
    if pos != tokens.len() {
        return Err(format!("condition: unexpected `{}`", tokens[pos]));
    }
    Ok(c)
}

fn or_expr(t: &[&str], pos: &mut usize, names: &[&str]) -> Result<Cond, String> {
    let mut left = and_expr(t, pos, names)?;
    while t.get(*pos) == Some(&"or") {
        *pos += 1;
        left = Cond::Or(Box::new(left), Box::new(and_expr(t, pos, names)?));
    }
    Ok(left)
}

fn and_expr(t: &[&str], pos: &mut usize, names: &[&str]) -> Result<Cond, String> {
    let mut left = unary(t, pos, names)?;
    while t.get(*pos) == Some(&"and") {
        *pos += 1;
        left = Cond::And(Box::new(left), Box::new(unary(t, pos, names)?));
    }
    Ok(left)
}

fn unary(t: &[&str], pos: &mut usize, names: &[&str]) -> Result<Cond, String> {
    let Some(&tok) = t.get(*pos) else {
        return Err("condition: ends early".into());
    };
    *pos += 1;
    match tok {
        "not" => Ok(Cond::Not(Box::new(unary(t, pos, names)?))),
        "(" => {
            let c = or_expr(t, pos, names)?;
            if t.get(*pos) != Some(&")") {
                return Err("condition: `(` without `)`".into());
            }
            *pos += 1;
            Ok(c)
        }
        "1" | "all" | "|" => Err(format!("condition: `{tok}` is not supported")),
        name => names
            .iter()
            .position(|n| *n == name)
            .map(Cond::Id)
            .ok_or_else(|| format!("condition: no search identifier `{name}`")),
    }
}

#[cfg(test)]
mod tests;
