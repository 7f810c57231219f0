//! Reading on past an unknown key, so that `check` reports every problem
//! in a file at once: serde stops at the first key a table does not know,
//! and the checks after it (a second typo, a cross-check between tables)
//! would otherwise go unreported until the first is fixed.
//!
//! An unknown entry is blanked out of the text (its bytes replaced by
//! spaces, its line ends kept), so every later position still names the
//! same line and column of the file as written.

use std::ops::Range;

use toml_edit::{ImDocument, InlineTable, Item, Table, Value};

/// The text with the entry whose key sits at `key_span` blanked out, or
/// `None` when no entry of the document has its key there.
pub(super) fn without_entry(text: &str, key_span: &Range<usize>) -> Option<String> {
    let document = ImDocument::parse(text).ok()?;
    let entry = entry_in_table(document.as_table(), key_span)?;
    let mut bytes = text.as_bytes().to_vec();
    for byte in &mut bytes[widen_over_comma(text, entry)] {
        if *byte != b'\n' && *byte != b'\r' {
            *byte = b' ';
        }
    }
    String::from_utf8(bytes).ok()
}

/// The bytes of the entry (key, value, and for a table every entry under
/// it) whose key starts where `key_span` does.
fn entry_in_table(table: &Table, key_span: &Range<usize>) -> Option<Range<usize>> {
    table.iter().find_map(|(name, _)| {
        let (key, item) = table.get_key_value(name)?;
        let key_range = key.span()?;
        if key_range.start == key_span.start {
            let end = extent_end(item).unwrap_or(key_range.end);
            // A table's key sits inside its `[header]`: blank the brackets too.
            let start = match item {
                Item::Table(t) => t.span().map_or(key_range.start, |s| s.start),
                _ => key_range.start,
            };
            return Some(start..end.max(key_range.end));
        }
        entry_in_item(item, key_span)
    })
}

fn entry_in_item(item: &Item, key_span: &Range<usize>) -> Option<Range<usize>> {
    match item {
        Item::Table(table) => entry_in_table(table, key_span),
        Item::ArrayOfTables(tables) => tables.iter().find_map(|t| entry_in_table(t, key_span)),
        Item::Value(Value::InlineTable(inline)) => entry_in_inline(inline, key_span),
        _ => None,
    }
}

fn entry_in_inline(table: &InlineTable, key_span: &Range<usize>) -> Option<Range<usize>> {
    table.iter().find_map(|(name, _)| {
        let (key, item) = table.get_key_value(name)?;
        let key_range = key.span()?;
        if key_range.start == key_span.start {
            return Some(key_range.start..extent_end(item).unwrap_or(key_range.end));
        }
        entry_in_item(item, key_span)
    })
}

/// Where an item's text ends: a value's own span, or the furthest end of
/// anything under a table.
fn extent_end(item: &Item) -> Option<usize> {
    match item {
        Item::Value(value) => value.span().map(|s| s.end),
        Item::Table(table) => table
            .iter()
            .filter_map(|(name, _)| {
                let (key, inner) = table.get_key_value(name)?;
                extent_end(inner).or_else(|| key.span().map(|s| s.end))
            })
            .chain(table.span().map(|s| s.end))
            .max(),
        Item::ArrayOfTables(tables) => tables.span().map(|s| s.end),
        Item::None => None,
    }
}

/// An entry of an inline table takes its separating comma with it, so
/// what is left still parses (`{ a = 1, typo = 2 }` → `{ a = 1 }`).
fn widen_over_comma(text: &str, entry: Range<usize>) -> Range<usize> {
    let after = &text[entry.end..];
    let spaces_after = after.len() - after.trim_start_matches([' ', '\t']).len();
    if after[spaces_after..].starts_with(',') {
        return entry.start..entry.end + spaces_after + 1;
    }
    let before = &text[..entry.start];
    let kept = before.trim_end_matches([' ', '\t']);
    match kept.strip_suffix(',') {
        Some(without) if after[spaces_after..].starts_with('}') => without.len()..entry.end,
        _ => entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(text: &str, key: &str) -> String {
        let at = text.find(key).expect("key in text");
        without_entry(text, &(at..at + key.len())).expect("entry found")
    }

    #[test]
    fn an_unknown_key_is_blanked_and_positions_stay() {
        let text = "[server]\nlisten = [\"a\"]\ntypo = \"x\"\nrealm = \"r\"\n";
        let left = blank(text, "typo");
        assert_eq!(left.len(), text.len());
        assert_eq!(left.lines().nth(2).map(str::trim), Some(""));
        let table: toml::Table = left.parse().expect("still toml");
        assert_eq!(table["server"]["realm"].as_str(), Some("r"));
    }

    #[test]
    fn an_inline_entry_takes_its_comma() {
        let text = "x = { a = 1, typo = 2 }\ny = { typo = 3, b = 4 }\n";
        let left = blank(text, "typo = 2");
        let left = blank(&left, "typo = 3");
        let table: toml::Table = left.parse().expect("still toml");
        assert_eq!(table["x"].as_table().map(|t| t.len()), Some(1));
        assert_eq!(table["y"]["b"].as_integer(), Some(4));
    }

    #[test]
    fn an_unknown_table_goes_with_its_entries() {
        let text = "[sesions]\nmax_age = \"1h\"\n\n[server]\nrealm = \"r\"\n";
        let left = blank(text, "sesions");
        let table: toml::Table = left.parse().expect("still toml");
        assert!(table.get("sesions").is_none());
        assert_eq!(table["server"]["realm"].as_str(), Some("r"));
    }
}
