//! Grammars of forced tool calls, in each model's own call format:
//!
//! * GLM-4: the metadata line is the function's name, the content its arguments as JSON:
//!   `get_weather\n{"city": "北京"}` — the arguments follow the `parameters` schema through
//!   llguidance's JSON Schema compiler;
//! * ChatGLM3: the metadata line is the name, the content a Python call in a code fence:
//!   ```` get_weather\n```python\ntool_call(city='北京', days=3)\n``` ```` — keyword
//!   arguments in the schema's property order (required ones always, optional ones may be
//!   left out), each value a Python literal of its property's schema: `True`/`False`/`None`
//!   for booleans and null, lists and dicts written here; strings and numbers are JSON text
//!   (a JSON string without `\u` and `\/` escapes, and a JSON number, are Python literals
//!   with the same value), constrained by llguidance's JSON compiler. What
//!   [`crate::agent::parse_tool_call`] reads back is then exactly the JSON value.
//!
//! The ChatGLM3 schema subset: `type` (one or a list), `enum`, `const`, `anyOf`/`oneOf`,
//! a one-element `allOf`, local `$ref`s (`#/$defs/...`, recursion allowed), `properties` and
//! `required`, `items`, `minItems`/`maxItems`, and the string and number keywords llguidance
//! takes (`pattern`, `format`, `minLength`, `maxLength`, `minimum`, `maximum`, ...);
//! annotations are ignored. Any other keyword is refused by name.

use super::{json_rule, lark_str, ConstraintError};
use crate::python::python_repr;
use crate::python::python_str_repr;
use crate::tokenizer::ChatFormat;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// A function a reply may call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    /// Its JSON Schema (`{"type": "object", "properties": ...}`); absent: no arguments
    /// constraint beyond "an object".
    pub parameters: Option<Value>,
}

impl ToolSpec {
    /// The tools of a normalized list (`agent::normalize_tools`: `{name, parameters}` each).
    pub fn from_tools(tools: &Value) -> Vec<ToolSpec> {
        tools
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                Some(ToolSpec {
                    name: t.get("name")?.as_str()?.to_string(),
                    parameters: t.get("parameters").filter(|p| !p.is_null()).cloned(),
                })
            })
            .collect()
    }
}

fn bad(tool: &str, at: &str, msg: impl std::fmt::Display) -> ConstraintError {
    let at = if at.is_empty() { "" } else { at };
    ConstraintError::Unsupported(format!("tools: function {tool:?}: parameters{at}: {msg}"))
}

/// Lark rules `rule: <a call of tool in format>`.
pub(super) fn call_rules(
    tool: &ToolSpec,
    format: ChatFormat,
    rule: &str,
) -> Result<String, ConstraintError> {
    if tool.name.is_empty() || tool.name.contains(['\n', '\r']) {
        return Err(ConstraintError::Unsupported(format!(
            "tools: the function name {:?} cannot be a metadata line",
            tool.name
        )));
    }
    let params = tool
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    let head = format!("{rule}: {} \"\\n\" {rule}_args\n", lark_str(&tool.name));
    match format {
        ChatFormat::Glm4 => {
            if !params.is_object() {
                return Err(bad(&tool.name, "", "expected a JSON Schema object"));
            }
            let mut params = params;
            closed_objects(&mut params);
            Ok(head + &json_rule(&format!("{rule}_args"), &params))
        }
        _ => {
            let mut py = PyGrammar {
                root: &params,
                tool: &tool.name,
                prefix: format!("{rule}_v"),
                rules: String::new(),
                count: 0,
                refs: HashMap::new(),
            };
            let kwargs = py.kwargs(&params)?;
            Ok(format!(
                "{head}{rule}_args: {} {kwargs} {}\n{}",
                lark_str("```python\ntool_call("),
                lark_str(")\n```"),
                py.rules
            ))
        }
    }
}

/// A function takes the arguments it declares: every object schema with `properties` and no
/// `additionalProperties` gets `"additionalProperties": false` (as OpenAI's strict function
/// schemas must say; ChatGLM3's calls pass declared keywords only, likewise).
fn closed_objects(schema: &mut Value) {
    match schema {
        Value::Object(o) => {
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            o.values_mut().for_each(closed_objects);
        }
        Value::Array(a) => a.iter_mut().for_each(closed_objects),
        _ => {}
    }
}

/// Keywords that only annotate a schema.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "$defs",
    "definitions",
    "additionalProperties",
    "strict",
];
/// String keywords, passed to llguidance's JSON compiler.
const STRING_KEYS: &[&str] = &["minLength", "maxLength", "pattern", "format"];
/// Number keywords, likewise.
const NUMBER_KEYS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];
const ARRAY_KEYS: &[&str] = &["items", "minItems", "maxItems"];
const OBJECT_KEYS: &[&str] = &["properties", "required"];
const OTHER_KEYS: &[&str] = &["type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref"];

/// The Python-literal grammar of a schema, as Lark rules.
struct PyGrammar<'a> {
    root: &'a Value,
    tool: &'a str,
    prefix: String,
    rules: String,
    count: usize,
    /// `$ref` → its rule.
    refs: HashMap<String, String>,
}

impl PyGrammar<'_> {
    fn new_rule(&mut self, body: &str) -> String {
        let name = format!("{}{}", self.prefix, self.count);
        self.count += 1;
        self.rules.push_str(&format!("{name}: {body}\n"));
        name
    }

    /// A rule `%json {schema}` with escapes that Python reads the same way.
    fn json_leaf(&mut self, schema: Value) -> String {
        let mut schema = schema;
        if let Some(o) = schema.as_object_mut() {
            o.insert(
                "x-guidance".into(),
                json!({"whitespace_flexible": false, "json_allowed_escapes": "nrbtf\"\\", "lenient": false}),
            );
        }
        self.new_rule(&format!("%json {schema}"))
    }

    /// `tool_call(...)`'s keyword arguments for the top-level parameters schema.
    fn kwargs(&mut self, params: &Value) -> Result<String, ConstraintError> {
        let o = params
            .as_object()
            .ok_or_else(|| bad(self.tool, "", "expected a JSON Schema object"))?;
        if let Some(t) = o.get("type") {
            if t != "object" {
                return Err(bad(
                    self.tool,
                    "",
                    "a tool's parameters must be of type \"object\"",
                ));
            }
        }
        self.check_keys(o, "", &[OBJECT_KEYS, &["type"]])?;
        let entries = self.properties(o, "", |name| {
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c == '_' || c.is_alphabetic())
                && name.chars().all(|c| c == '_' || c.is_alphanumeric());
            ok.then(|| lark_str(&format!("{name}=")))
        })?;
        Ok(self.sequence(&entries))
    }

    /// Each property as (required, lark of `key<sep>value`); `key` gives a property's prefix
    /// (None: the name cannot be written).
    fn properties(
        &mut self,
        o: &Map<String, Value>,
        at: &str,
        key: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(bool, String)>, ConstraintError> {
        let required: Vec<&str> = match o.get("required") {
            None => vec![],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(bad(self.tool, at, "\"required\" must be a list of names")),
        };
        let empty = Map::new();
        let props = match o.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => return Err(bad(self.tool, at, "\"properties\" must be an object")),
        };
        if let Some(missing) = required.iter().find(|r| !props.contains_key(**r)) {
            return Err(bad(
                self.tool,
                at,
                format!("required property {missing:?} is not in \"properties\""),
            ));
        }
        let mut out = Vec::new();
        for (name, schema) in props {
            let at = format!("{at}.properties.{name}");
            let prefix = key(name).ok_or_else(|| {
                bad(
                    self.tool,
                    &at,
                    "the name is not a Python identifier, so tool_call(...) cannot pass it",
                )
            })?;
            let value = self.value(schema, &at)?;
            out.push((
                required.contains(&name.as_str()),
                format!("{prefix} {value}"),
            ));
        }
        Ok(out)
    }

    /// Entries joined by ", " in order, optional ones possibly left out: rules `b_i` (nothing
    /// written yet) and `a_i` (something written, so a comma first) from the end backwards.
    fn sequence(&mut self, entries: &[(bool, String)]) -> String {
        let (mut a, mut b) = ("\"\"".to_string(), "\"\"".to_string());
        for (required, entry) in entries.iter().rev() {
            let with = format!("{entry} {a}");
            let after_comma = format!("\", \" {entry} {a}");
            let (na, nb) = if *required {
                (after_comma, with)
            } else {
                (format!("{after_comma} | {a}"), format!("{with} | {b}"))
            };
            a = self.new_rule(&na);
            b = self.new_rule(&nb);
        }
        b
    }

    fn check_keys(
        &self,
        o: &Map<String, Value>,
        at: &str,
        allowed: &[&[&str]],
    ) -> Result<(), ConstraintError> {
        for k in o.keys() {
            if !ANNOTATIONS.contains(&k.as_str())
                && !allowed.iter().any(|a| a.contains(&k.as_str()))
            {
                return Err(bad(
                    self.tool,
                    at,
                    format!("the keyword {k:?} is not supported in ChatGLM3's tool-call arguments"),
                ));
            }
        }
        Ok(())
    }

    /// The Lark expression of a Python literal matching `schema`.
    fn value(&mut self, schema: &Value, at: &str) -> Result<String, ConstraintError> {
        let o = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Bool(false) => {
                return Err(bad(self.tool, at, "the schema false allows nothing"))
            }
            Value::Object(o) => o,
            _ => return Err(bad(self.tool, at, "expected a JSON Schema object")),
        };
        self.check_keys(
            o,
            at,
            &[
                OTHER_KEYS,
                STRING_KEYS,
                NUMBER_KEYS,
                ARRAY_KEYS,
                OBJECT_KEYS,
            ],
        )?;
        if let Some(r) = o.get("$ref") {
            let r = r
                .as_str()
                .ok_or_else(|| bad(self.tool, at, "$ref must be a string"))?;
            return self.reference(r, at);
        }
        if let Some(c) = o.get("const") {
            return Ok(lark_str(&python_repr(c)));
        }
        if let Some(e) = o.get("enum") {
            let values = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad(self.tool, at, "\"enum\" must be a non-empty list"))?;
            let alts: Vec<String> = values.iter().map(|v| lark_str(&python_repr(v))).collect();
            return Ok(format!("({})", alts.join(" | ")));
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = o.get(key) {
                let list = list.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                    bad(self.tool, at, format!("\"{key}\" must be a non-empty list"))
                })?;
                if key == "allOf" && list.len() > 1 {
                    return Err(bad(self.tool, at, "\"allOf\" with more than one schema is not supported in ChatGLM3's tool-call arguments"));
                }
                let mut alts = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    alts.push(self.value(s, &format!("{at}.{key}[{i}]"))?);
                }
                return Ok(format!("({})", alts.join(" | ")));
            }
        }
        let types: Vec<&str> = match o.get("type") {
            None => return Ok(self.any()),
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(bad(self.tool, at, "\"type\" must be a string or a list")),
        };
        let mut alts = Vec::new();
        for t in types {
            let pick = |keys: &[&str]| -> Value {
                let mut m = Map::new();
                m.insert("type".into(), Value::String(t.into()));
                for k in keys {
                    if let Some(v) = o.get(*k) {
                        m.insert((*k).into(), v.clone());
                    }
                }
                Value::Object(m)
            };
            alts.push(match t {
                "string" => self.json_leaf(pick(STRING_KEYS)),
                "integer" | "number" => self.json_leaf(pick(NUMBER_KEYS)),
                "boolean" => "(\"True\" | \"False\")".to_string(),
                "null" => "\"None\"".to_string(),
                "array" => self.array(o, at)?,
                "object" => self.object(o, at)?,
                other => return Err(bad(self.tool, at, format!("unknown type {other:?}"))),
            });
        }
        Ok(format!("({})", alts.join(" | ")))
    }

    fn array(&mut self, o: &Map<String, Value>, at: &str) -> Result<String, ConstraintError> {
        let item = match o.get("items") {
            None => self.any(),
            Some(s) => self.value(s, &format!("{at}.items"))?,
        };
        let count = |k: &str| -> Result<Option<u64>, ConstraintError> {
            match o.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(self.tool, at, format!("\"{k}\" must be a count"))),
            }
        };
        let min = count("minItems")?.unwrap_or(0);
        let max = count("maxItems")?;
        if max.is_some_and(|m| m < min) {
            return Err(bad(self.tool, at, "maxItems is below minItems"));
        }
        let item = self.new_rule(&item);
        let more = |lo: u64| -> String {
            match max {
                None if lo == 0 => format!("(\", \" {item})*"),
                None => format!("(\", \" {item}){{{lo},}}"),
                Some(hi) => format!("(\", \" {item}){{{lo},{}}}", hi - 1),
            }
        };
        Ok(match (min, max) {
            (_, Some(0)) => "\"[]\"".to_string(),
            (0, _) => format!("\"[\" ({item} {})? \"]\"", more(0)),
            (m, _) => format!("\"[\" {item} {} \"]\"", more(m - 1)),
        })
    }

    fn object(&mut self, o: &Map<String, Value>, at: &str) -> Result<String, ConstraintError> {
        if o.get("properties").is_none() {
            // any dict
            return Ok(self.any_dict());
        }
        let entries = self.properties(o, at, |name| {
            Some(lark_str(&format!("{}: ", python_str_repr(name))))
        })?;
        let inner = self.sequence(&entries);
        Ok(format!("\"{{\" {inner} \"}}\""))
    }

    fn reference(&mut self, r: &str, at: &str) -> Result<String, ConstraintError> {
        if let Some(rule) = self.refs.get(r) {
            return Ok(rule.clone());
        }
        let target = r
            .strip_prefix('#')
            .and_then(|p| self.root.pointer(p))
            .ok_or_else(|| {
                bad(
                    self.tool,
                    at,
                    format!("$ref {r:?}: only references inside the schema (#/...) are supported"),
                )
            })?
            .clone();
        let name = format!("{}{}", self.prefix, self.count);
        self.count += 1;
        self.refs.insert(r.to_string(), name.clone());
        let body = self.value(&target, &format!("{at}($ref {r})"))?;
        self.rules.push_str(&format!("{name}: {body}\n"));
        Ok(name)
    }

    /// Any JSON value as a Python literal.
    fn any(&mut self) -> String {
        let name = format!("{}_any", self.prefix);
        if !self.rules.contains(&format!("\n{name}: "))
            && !self.rules.starts_with(&format!("{name}: "))
        {
            let s = self.json_leaf(json!({"type": "string"}));
            let n = self.json_leaf(json!({"type": "number"}));
            self.rules.push_str(&format!(
                "{name}: \"None\" | \"True\" | \"False\" | {n} | {s} | \"[\" ({name} (\", \" {name})*)? \"]\" | \"{{\" ({s} \": \" {name} (\", \" {s} \": \" {name})*)? \"}}\"\n"
            ));
        }
        name
    }

    fn any_dict(&mut self) -> String {
        let any = self.any();
        let s = self.json_leaf(json!({"type": "string"}));
        format!("\"{{\" ({s} \": \" {any} (\", \" {s} \": \" {any})*)? \"}}\"")
    }
}
