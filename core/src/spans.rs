//! Where a key is written in a TOML text, from the parser's own spans (toml_edit), so
//! that every config and workflow error points at the offending key's line and column:
//! `[executor.b] workers` is found in executor `b`'s table, the third `[[provider]]`'s
//! `settings.mode` in that provider's inline table, never at the first key of that
//! name in the file.

use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Table, Value};

/// One step of a path into a TOML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At<'a> {
    /// A key of a table or inline table.
    Key(&'a str),
    /// An element of an array of tables (`[[task]]`) or of an array.
    Index(usize),
}

/// A node of the document that a path can go into.
#[derive(Clone, Copy)]
enum Node<'d> {
    Table(&'d Table),
    Inline(&'d InlineTable),
    Tables(&'d ArrayOfTables),
    Array(&'d Array),
    Leaf,
}

impl<'d> Node<'d> {
    fn of_item(item: &'d Item) -> Node<'d> {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::of_value(v),
            Item::None => Node::Leaf,
        }
    }

    fn of_value(value: &'d Value) -> Node<'d> {
        match value {
            Value::InlineTable(t) => Node::Inline(t),
            Value::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }
}

/// The byte offset of `path` in `text`: where its last key is written, else the
/// nearest enclosing part that is (a table's header, an array element); `None` if
/// the text does not parse or no part of the path is found.
pub fn offset_of(text: &str, path: &[At<'_>]) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for step in path {
        let (next, span) = match (node, *step) {
            (Node::Table(t), At::Key(k)) => (
                t.get(k).map(Node::of_item),
                t.key(k).and_then(|key| key.span()),
            ),
            (Node::Inline(t), At::Key(k)) => (
                t.get(k).map(Node::of_value),
                t.key(k).and_then(|key| key.span()),
            ),
            (Node::Tables(a), At::Index(i)) => {
                let t = a.get(i);
                (t.map(Node::Table), t.and_then(|t| t.span()))
            }
            (Node::Array(a), At::Index(i)) => {
                let v = a.get(i);
                (v.map(Node::of_value), v.and_then(|v| v.span()))
            }
            _ => (None, None),
        };
        if let Some(span) = span {
            best = Some(span.start);
        }
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use At::{Index, Key};

    fn at(text: &str, path: &[At<'_>]) -> Option<(usize, usize)> {
        offset_of(text, path).map(|o| crate::config::line_column(text, o))
    }

    #[test]
    fn keys_are_found_in_their_own_table() {
        let text = "[executor.a]\nworkers = 2\n\n[executor.b]\nworkers = 0\n";
        assert_eq!(
            at(text, &[Key("executor"), Key("b"), Key("workers")]),
            Some((5, 1))
        );
        assert_eq!(
            at(text, &[Key("executor"), Key("a"), Key("workers")]),
            Some((2, 1))
        );
        // A key that is not written: its table.
        assert_eq!(
            at(text, &[Key("executor"), Key("b"), Key("slurm")]),
            Some((4, 11))
        );
    }

    #[test]
    fn arrays_of_tables_inline_tables_and_arrays() {
        let text = "[[provider]]\nname = \"a\"\nsettings = { mode = \"x\" }\n\n[[provider]]\nname = \"b\"\nsettings = { hosts = [], mode = \"y\" }\n[[task]]\ninputs = [\"u1\", \"u2\"]\n";
        assert_eq!(
            at(text, &[Key("provider"), Index(1), Key("name")]),
            Some((6, 1))
        );
        assert_eq!(
            at(
                text,
                &[Key("provider"), Index(1), Key("settings"), Key("mode")]
            ),
            Some((7, 26))
        );
        assert_eq!(
            at(text, &[Key("task"), Index(0), Key("inputs"), Index(1)]),
            Some((9, 17))
        );
        // Past the end of an array of tables: its key.
        assert_eq!(
            at(text, &[Key("provider"), Index(5), Key("name")]),
            Some((1, 3))
        );
        assert_eq!(offset_of("not = [toml", &[Key("not")]), None);
    }

    #[test]
    fn dotted_and_quoted_keys() {
        let text = "executor.\"a.b\".workers = 3\n";
        assert_eq!(
            at(text, &[Key("executor"), Key("a.b"), Key("workers")]),
            Some((1, 16))
        );
    }
}
