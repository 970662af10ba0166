//! Label selectors (`metav1.LabelSelector`) parsed once and matched many times.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector. An invalid one (unknown operator, `In` without values) matches
/// nothing: the API server rejects such objects, and if one slips through, matching
/// nothing is the choice that never opens traffic a valid policy would block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Requirement>,
    invalid: Option<String>,
}

impl Selector {
    /// The empty selector: matches every object.
    pub fn everything() -> Self {
        Selector {
            reqs: Vec::new(),
            invalid: None,
        }
    }

    pub fn parse(sel: &LabelSelector) -> Self {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        let mut invalid = None;
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    invalid = Some(format!(
                        "matchExpressions key {:?}: operator {} needs values",
                        e.key, e.operator
                    ));
                    continue;
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    invalid = Some(format!(
                        "matchExpressions key {:?}: operator {} takes no values",
                        e.key, e.operator
                    ));
                    continue;
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    invalid = Some(format!(
                        "matchExpressions key {:?}: unknown operator {other:?}",
                        e.key
                    ));
                    continue;
                }
            };
            reqs.push(req);
        }
        Selector { reqs, invalid }
    }

    /// Why this selector is invalid, if it is.
    pub fn invalid(&self) -> Option<&str> {
        self.invalid.as_deref()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        if self.invalid.is_some() {
            return false;
        }
        self.reqs.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn selector_table() {
        let a = labels(&[("app", "web"), ("tier", "front")]);
        let b = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases: Vec<(&str, LabelSelector, [bool; 3])> = vec![
            (
                "empty matches all",
                LabelSelector::default(),
                [true, true, true],
            ),
            (
                "matchLabels",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    ..Default::default()
                },
                [true, false, false],
            ),
            (
                "In",
                LabelSelector {
                    match_expressions: Some(vec![expr("app", "In", &["web", "db"])]),
                    ..Default::default()
                },
                [true, true, false],
            ),
            (
                "NotIn matches missing key",
                LabelSelector {
                    match_expressions: Some(vec![expr("app", "NotIn", &["web"])]),
                    ..Default::default()
                },
                [false, true, true],
            ),
            (
                "Exists",
                LabelSelector {
                    match_expressions: Some(vec![expr("tier", "Exists", &[])]),
                    ..Default::default()
                },
                [true, false, false],
            ),
            (
                "DoesNotExist",
                LabelSelector {
                    match_expressions: Some(vec![expr("tier", "DoesNotExist", &[])]),
                    ..Default::default()
                },
                [false, true, true],
            ),
            (
                "labels and expressions are ANDed",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: Some(vec![expr("tier", "NotIn", &["front"])]),
                },
                [false, false, false],
            ),
            (
                "unknown operator matches nothing",
                LabelSelector {
                    match_expressions: Some(vec![expr("app", "Like", &["w"])]),
                    ..Default::default()
                },
                [false, false, false],
            ),
            (
                "In without values matches nothing",
                LabelSelector {
                    match_expressions: Some(vec![expr("app", "In", &[])]),
                    ..Default::default()
                },
                [false, false, false],
            ),
        ];
        for (name, sel, want) in cases {
            let s = Selector::parse(&sel);
            let got = [s.matches(&a), s.matches(&b), s.matches(&none)];
            assert_eq!(got, want, "case {name}");
        }
    }
}
