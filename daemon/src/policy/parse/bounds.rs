//! Bounds on policy input checked before the YAML parser runs: size and
//! nesting depth. serde_yaml's cost grows with the square of the nesting
//! depth (100,000 levels took 31 s), so depth is found by a linear scan of
//! the text that over-counts rather than under-counts: a text it accepts
//! nests no deeper than it says.

/// Largest policy file (bytes). An 8,000-rule policy is about 800 KB.
pub const MAX_POLICY_BYTES: usize = 4 << 20;
/// Deepest nesting of YAML collections (a policy needs 4: the top mapping,
/// `rules`, a rule, its selector; a port list is 5).
pub const MAX_NESTING_DEPTH: usize = 32;

/// An upper bound on the nesting depth of the YAML collections in `text`,
/// and the 1-based line where it is first reached. Counts block levels by
/// indentation (plus one per compact `- ` or `? ` indicator on a line) and
/// flow levels by `[` and `{` outside quoted scalars and comments. A quote
/// starts a quoted scalar only where a scalar can start, as in YAML, so a
/// `'` inside a plain scalar cannot hide brackets from this scan.
pub fn nesting_depth(text: &str) -> (usize, usize) {
    let b = text.as_bytes();
    let mut max = (0, 1);
    let mut line = 1;
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    let mut i = 0;
    // Whether the previous significant byte allows a scalar to start here.
    let mut scalar_start = true;
    let mut at_line_start = true;
    while i < b.len() {
        if at_line_start {
            at_line_start = false;
            let mut col = 0;
            while i < b.len() && b[i] == b' ' {
                col += 1;
                i += 1;
            }
            if flow == 0 && i < b.len() && !matches!(b[i], b'\n' | b'\r' | b'#') {
                while indents.last().is_some_and(|&top| top > col) {
                    indents.pop();
                }
                if indents.last() != Some(&col) {
                    indents.push(col);
                }
                // Compact collections: `- - - x`, `? - x`, `- a: ...`.
                let mut extra = 0;
                let mut j = i;
                while j + 1 < b.len() && matches!(b[j], b'-' | b'?') && b[j + 1] == b' ' {
                    extra += 1;
                    j += 2;
                    while j < b.len() && b[j] == b' ' {
                        j += 1;
                    }
                }
                let depth = indents.len() + extra + 1;
                if depth > max.0 {
                    max = (depth, line);
                }
            }
            scalar_start = true;
            continue;
        }
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                at_line_start = true;
            }
            b'#' if i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\'' | b'"' if scalar_start => {
                // Skip the quoted scalar ('' and \" are escapes).
                i += 1;
                while i < b.len() {
                    if b[i] == b'\n' {
                        line += 1;
                    } else if c == b'"' && b[i] == b'\\' {
                        i += 1;
                    } else if b[i] == c {
                        if c == b'\'' && b.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
                scalar_start = false;
            }
            b'[' | b'{' if scalar_start || flow > 0 => {
                flow += 1;
                let depth = indents.len() + flow + 1;
                if depth > max.0 {
                    max = (depth, line);
                }
                scalar_start = true;
            }
            b']' | b'}' if flow > 0 => {
                flow -= 1;
                scalar_start = false;
            }
            b' ' | b'\t' | b'\r' => {}
            b':' | b',' | b'-' | b'?' => scalar_start = true,
            _ => scalar_start = false,
        }
        i += 1;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_policies_are_shallow() {
        let text = "version: 1\nrules:\n  - id: a\n    connect: { to: 1.2.3.4, ports: [80, \"90-91\"] }\n    decision: allow\n  - id: b\n    file:\n      prefix: /etc/\n      access:\n        - read\n    decision: allow\n";
        let (depth, _) = nesting_depth(text);
        assert!((4..=8).contains(&depth), "{depth}");
    }

    #[test]
    fn flow_block_and_compact_nesting_are_counted() {
        assert!(nesting_depth(&"[".repeat(100)).0 >= 100);
        assert!(nesting_depth(&format!("a: {}", "{a: ".repeat(100))).0 >= 100);
        assert!(nesting_depth(&format!("{}x", "- ".repeat(100))).0 >= 100);
        let block: String = (0..100).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(nesting_depth(&block).0 >= 100);
    }

    #[test]
    fn quotes_and_comments_hide_brackets_only_where_yaml_does() {
        assert!(nesting_depth("a: '[[[[[[[[[['\nb: \"{{{{{{{{{{\" # [[[[[[[[\n").0 < 5);
        // A quote inside a plain scalar starts nothing: the brackets on the
        // next line still count.
        let sneaky = format!("a: it's\nb: {}\n", "[".repeat(100));
        assert!(nesting_depth(&sneaky).0 >= 100);
    }
}
