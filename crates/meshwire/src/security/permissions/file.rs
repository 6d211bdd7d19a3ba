//! Reading a permissions file: TOML in, a checked [`Permissions`] table
//! out, or a [`PermissionsError`] naming the file, the line and what to
//! write instead.

use super::{Permissions, Who};
use meshwire_proto::wire::{Grants, NodeId, OpRules, Operation, Subject};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The most pattern bytes one file may hold. Every client is sent its
/// rules in one message, which must fit in a frame with room to spare.
pub(super) const MAX_PATTERN_BYTES: usize = 256 * 1024;

const FORMAT_HINT: &str = "see \"Permissions\" in docs/SECURITY.md for the format";

/// Why a permissions file cannot be used. Fatal at start; on a reload the
/// node keeps the rules it had and reports this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionsError {
    /// The file could not be read.
    // The cause is in the message, not a `source`: error reporters that
    // print the chain would say it twice.
    #[error("cannot read permissions file {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// Not valid TOML, or a key this format does not have (the message
    /// names the keys it expected).
    #[error("{}:{line}:{column}: {message}; {FORMAT_HINT}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line, from 1 (0 when the parser gave no position).
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A key under `[nodes]` or a member of a group is not a NodeId.
    #[error(
        "{}:{line}: {text:?} is not a node id ({reason}); write a node id (26 characters of \
         a-z and 2-7, as printed in a node's ready line or by `meshwire keygen`){}",
        path.display(),
        if *.in_group { "" } else { ", \"group:NAME\" for a group from [groups], or \"*\" for every node" }
    )]
    BadNodeId {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// What was written.
        text: String,
        /// Why it is not a NodeId.
        reason: String,
        /// True for a group member (groups hold node ids only).
        in_group: bool,
    },
    /// A group name with characters other than letters, digits, `-`, `_`.
    #[error(
        "{}:{line}: {name:?} is not a valid group name; use letters, digits, `-` and `_`",
        path.display()
    )]
    BadGroupName {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// The name.
        name: String,
    },
    /// `[nodes."group:NAME"]` names a group `[groups]` does not define.
    #[error(
        "{}:{line}: group {name:?} is not defined; add `{name} = [\"<nodeid>\", ...]` under \
         [groups], or correct the name",
        path.display()
    )]
    UnknownGroup {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// The group's name.
        name: String,
    },
    /// A pattern that is not a valid subject pattern (publish, subscribe)
    /// or service pattern (serve, call).
    #[error("{}:{line}: {op} pattern {pattern:?} is not valid: {reason}", path.display())]
    BadPattern {
        /// The file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// The section it is in.
        op: Operation,
        /// The pattern.
        pattern: String,
        /// What is wrong, and what to write.
        reason: String,
    },
    /// The patterns add up to more than a client could be sent.
    #[error(
        "{}: the patterns add up to {bytes} bytes; the limit is {max}. Use wildcards and \
         groups to say the same in fewer patterns",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Their total size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    nodes: BTreeMap<Spanned<String>, EntryDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    #[serde(default)]
    publish: OpDoc,
    #[serde(default)]
    subscribe: OpDoc,
    #[serde(default)]
    serve: OpDoc,
    #[serde(default)]
    call: OpDoc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OpDoc {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

/// The file's text.
pub(crate) fn read_text(path: &Path) -> Result<String, PermissionsError> {
    std::fs::read_to_string(path).map_err(|cause| PermissionsError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Where a byte offset falls: (line, column), both from 1.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Permissions, PermissionsError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| position(text, s.start));
        PermissionsError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    let line_of = |s: &Spanned<String>| position(text, s.span().start).0;
    let mut groups: HashMap<String, Vec<NodeId>> = HashMap::new();
    for (name, members) in &doc.groups {
        if !is_group_name(name.get_ref()) {
            return Err(PermissionsError::BadGroupName {
                path: path.to_path_buf(),
                line: line_of(name),
                name: name.get_ref().clone(),
            });
        }
        let ids = members
            .iter()
            .map(|m| {
                m.get_ref()
                    .parse::<NodeId>()
                    .map_err(|e| PermissionsError::BadNodeId {
                        path: path.to_path_buf(),
                        line: line_of(m),
                        text: m.get_ref().chars().take(80).collect(),
                        reason: e.to_string(),
                        in_group: true,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        groups.insert(name.get_ref().clone(), ids);
    }
    let mut entries = Vec::new();
    let mut bytes = 0;
    for (key, entry) in &doc.nodes {
        let k = key.get_ref();
        let who = if k == "*" {
            Who::Everyone
        } else if let Some(name) = k.strip_prefix("group:") {
            if !groups.contains_key(name) {
                return Err(PermissionsError::UnknownGroup {
                    path: path.to_path_buf(),
                    line: line_of(key),
                    name: name.to_owned(),
                });
            }
            Who::Group(name.to_owned())
        } else {
            Who::Node(
                k.parse()
                    .map_err(|e: meshwire_proto::wire::ParseNodeIdError| {
                        PermissionsError::BadNodeId {
                            path: path.to_path_buf(),
                            line: line_of(key),
                            text: k.chars().take(80).collect(),
                            reason: e.to_string(),
                            in_group: false,
                        }
                    })?,
            )
        };
        let mut grants = Grants::default();
        for (op, doc) in [
            (Operation::Publish, &entry.publish),
            (Operation::Subscribe, &entry.subscribe),
            (Operation::Serve, &entry.serve),
            (Operation::Call, &entry.call),
        ] {
            let mut rules = OpRules::default();
            for (list, out) in [(&doc.allow, &mut rules.allow), (&doc.deny, &mut rules.deny)] {
                for p in list {
                    let pattern = check_pattern(op, p.get_ref()).map_err(|reason| {
                        PermissionsError::BadPattern {
                            path: path.to_path_buf(),
                            line: line_of(p),
                            op,
                            pattern: p.get_ref().chars().take(200).collect(),
                            reason,
                        }
                    })?;
                    bytes += pattern.len() + 3;
                    out.push(pattern);
                }
            }
            grants.ops[op.index()] = rules;
        }
        entries.push((who, grants));
    }
    if bytes > MAX_PATTERN_BYTES {
        return Err(PermissionsError::TooLarge {
            path: path.to_path_buf(),
            bytes,
            max: MAX_PATTERN_BYTES,
        });
    }
    Ok(Permissions { groups, entries })
}

fn is_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A subject pattern for publish and subscribe; one token for serve and
/// call (a service name, `*` or `>`).
fn check_pattern(op: Operation, p: &str) -> Result<Subject, String> {
    let subject = Subject::pattern(p).map_err(|e| e.to_string())?;
    if matches!(op, Operation::Serve | Operation::Call) && p.contains('.') {
        return Err(format!(
            "service patterns are one token: a service name (letters, digits, `-`, `_`), `*` \
             or `>`; for example `Calculator` or `*` ({FORMAT_HINT})"
        ));
    }
    Ok(subject)
}
