//! Aligned text columns for people; scripts use `--json` instead, so this format may change.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers, so that digits of the same weight line up.
    Right,
}

#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(name, align)| ((*name).to_owned(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header and the rows, two spaces between columns, each line prefixed by `indent`.
    /// The last column is not padded, so a long free-text column does not pad every line.
    pub fn render(&self, indent: &str) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(name, _)| width(name)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let header: Vec<String> = self.columns.iter().map(|(name, _)| name.clone()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::from(indent);
            let last = row.len().min(self.columns.len()).saturating_sub(1);
            for (i, cell) in row.iter().enumerate().take(self.columns.len()) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(width(cell));
                match self.columns[i].1 {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if i < last {
                            line.push_str(&" ".repeat(pad));
                        }
                    }
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// An age for people: `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `text` cut to at most `max` characters, with `…` marking a cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_leaves_the_last_unpadded() {
        let mut table = Table::new(&[("QUEUE", Align::Left), ("READY", Align::Right)]);
        table.row(vec!["a.jobs".into(), "120".into()]);
        table.row(vec!["a.retry.10m".into(), "3".into()]);
        assert_eq!(
            table.render("  "),
            "  QUEUE        READY\n  a.jobs         120\n  a.retry.10m      3\n"
        );
        let mut free = Table::new(&[("ID", Align::Right), ("ERROR", Align::Left)]);
        free.row(vec!["7".into(), "x".into()]);
        assert_eq!(free.render(""), "ID  ERROR\n 7  x\n");
    }

    #[test]
    fn ages_and_clips_read_well() {
        assert_eq!(age(42), "42s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(5 * 3600 + 180), "5h03m");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2d04h");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
