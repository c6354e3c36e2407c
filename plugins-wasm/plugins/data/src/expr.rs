//! The data plugin's expression language, parsed and simplified as nbdkit's
//! plugins/data/format.c does it. The simplifications matter beyond speed: a run of zero
//! bytes becomes a fill, which leaves a hole where separate bytes would allocate a page, and
//! block status shows the difference. Plain Rust, unit-tested natively.

use nbdkit_parse::{parse_u16, parse_u32, parse_u64, scan};

/// One expression (format.c's `expr_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Null,
    List(Vec<Expr>),
    Byte(u8),
    /// `@N`
    AbsOffset(u64),
    /// `@+N`, `@-N`
    RelOffset(i64),
    /// `@^N`
    AlignOffset(u64),
    /// `<FILE`
    File(String),
    /// `<(SCRIPT)`
    Script(String),
    /// `"..."`, `le32:N` and the like, and bytes run together
    String(Vec<u8>),
    /// `byte` `count` times
    Fill(u8, u64),
    /// `\NAME`
    Name(String),
    /// `expr -> \NAME`
    Assign(String, Box<Expr>),
    /// `expr * N`
    Repeat(Box<Expr>, u64),
    /// `expr[N:M]`; M is -1 for "to the end"
    Slice(Box<Expr>, u64, i64),
}

/// Where `$NAME` finds its text: the plugin's other command-line keys.
pub trait Variables {
    fn get(&self, name: &str) -> Option<&str>;
}

fn parse_error(i: usize) -> String {
    format!("data parameter: parsing error at offset {i}")
}

/// A number as sscanf's `%i` (into an int64_t) reads it at `s[i..]`: its value and length.
fn scan_i64(s: &[u8], i: usize) -> Option<(i64, usize)> {
    let text = std::str::from_utf8(&s[i..]).ok()?;
    let scanned = scan(text);
    (scanned.len > 0).then(|| (scanned.saturating_i64(), scanned.len))
}

fn is_data(e: &Expr) -> bool {
    !matches!(e, Expr::AbsOffset(_) | Expr::RelOffset(_) | Expr::AlignOffset(_))
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// format.c's get_name / get_var: after white space, `prefix` and a name of the characters
/// `allowed` accepts (for a variable, not starting with a digit); its start and length.
fn get_name(s: &[u8], mut i: usize, prefix: u8, var: bool) -> Option<(usize, usize)> {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    if s.get(i) != Some(&prefix) {
        return None;
    }
    let start = i + 1;
    if var && !s.get(start).is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') {
        return None;
    }
    let len = s[start.min(s.len())..]
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_' || (!var && c == b'-'))
        .count();
    (len > 0).then_some((start, len))
}

fn text(s: &[u8], start: usize, len: usize) -> String {
    String::from_utf8_lossy(&s[start..start + len]).into_owned()
}

/// Parse the whole `data=` value.
pub fn parse(value: &str, vars: &dyn Variables) -> Result<Expr, String> {
    let mut i = 0;
    parser(0, value.as_bytes(), &mut i, vars)
}

fn parser(level: u32, s: &[u8], i: &mut usize, vars: &dyn Variables) -> Result<Expr, String> {
    let mut list: Vec<Expr> = Vec::new();
    while *i < s.len() {
        match s[*i] {
            b'#' => {
                while *i < s.len() && s[*i] != b'\n' {
                    *i += 1;
                }
            }
            b'@' => {
                *i += 1;
                let kind = *s.get(*i).ok_or_else(|| parse_error(*i))?;
                if matches!(kind, b'+' | b'-' | b'^') {
                    *i += 1;
                } else if !kind.is_ascii_digit() {
                    return Err(parse_error(*i));
                }
                let (n, len) = scan_i64(s, *i).ok_or_else(|| parse_error(*i))?;
                if n < 0 {
                    let what = match kind {
                        b'+' => "after @+",
                        b'-' => "after @-",
                        b'^' => "after @^",
                        _ => "@OFFSET",
                    };
                    return Err(format!("data parameter {what} must not be negative"));
                }
                *i += len;
                list.push(match kind {
                    b'+' => Expr::RelOffset(n),
                    b'-' => Expr::RelOffset(-n),
                    b'^' => {
                        if !(n as u64).is_power_of_two() {
                            return Err(format!("data parameter @^{n} must be a power of 2"));
                        }
                        Expr::AlignOffset(n as u64)
                    }
                    _ => Expr::AbsOffset(n as u64),
                });
            }
            b'(' => {
                *i += 1;
                list.push(parser(level + 1, s, i, vars)?);
            }
            b')' => {
                if level < 1 {
                    return Err("unmatched ')' in data string".into());
                }
                *i += 1;
                return Ok(Expr::List(list));
            }
            b'*' => {
                *i += 1;
                let last = data_operand(&mut list, "*N")?;
                let (n, len) = scan_i64(s, *i).ok_or("*N not numeric")?;
                if n < 0 {
                    return Err("data parameter @OFFSET must not be negative".into());
                }
                *i += len;
                list.push(Expr::Repeat(Box::new(last), n as u64));
            }
            b'[' => {
                *i += 1;
                let last = data_operand(&mut list, "[N:M]")?;
                let (n, m, len) = slice_bounds(s, *i).ok_or("enclosed pattern (...)[N:M] not numeric")?;
                *i += len;
                list.push(Expr::Slice(Box::new(last), n as u64, m));
            }
            b'<' if s.get(*i + 1) == Some(&b'(') => {
                *i += 2;
                let len = script_len(s, *i).ok_or_else(|| parse_error(*i))?;
                list.push(Expr::Script(text(s, *i, len)));
                *i += len + 1;
            }
            b'<' => {
                *i += 1;
                let len = s[*i..].iter().take_while(|c| !b"*[) \t\n".contains(c)).count();
                if len == 0 {
                    return Err("data parameter <FILE not a filename".into());
                }
                list.push(Expr::File(text(s, *i, len)));
                *i += len;
            }
            b'"' => {
                *i += 1;
                list.push(Expr::String(parse_string(s, i)?));
            }
            b'\\' => {
                let (start, len) = get_name(s, *i, b'\\', false).ok_or_else(|| parse_error(*i))?;
                list.push(Expr::Name(text(s, start, len)));
                *i = start + len;
            }
            b'-' => {
                *i += 1;
                if s.get(*i) != Some(&b'>') {
                    return Err(parse_error(*i));
                }
                *i += 1;
                let last = data_operand(&mut list, "->")?;
                let (start, len) = get_name(s, *i, b'\\', false).ok_or_else(|| parse_error(*i))?;
                list.push(Expr::Assign(text(s, start, len), Box::new(last)));
                *i = start + len;
            }
            b'$' => {
                let (start, len) = get_name(s, *i, b'$', true).ok_or_else(|| parse_error(*i))?;
                let name = text(s, start, len);
                *i = start + len;
                let content = vars.get(&name).ok_or_else(|| format!("${name}: variable not found"))?;
                let mut ci = 0;
                list.push(parser(0, content.as_bytes(), &mut ci, vars)?);
            }
            b'0'..=b'9' => {
                let (n, len) = scan_i64(s, *i).ok_or_else(|| parse_error(*i))?;
                // sscanf's %i into an int keeps the low 32 bits of what strtol read.
                let n = n as i32;
                if !(0..=255).contains(&n) {
                    return Err("data parameter BYTE must be in the range 0..255".into());
                }
                *i += len;
                list.push(Expr::Byte(n as u8));
            }
            b'l' | b'b' => list.push(Expr::String(parse_word(s, i)?)),
            c if is_space(c) => *i += 1,
            _ => return Err(parse_error(*i)),
        }
    }
    if level > 0 {
        return Err("unmatched '(' in data string".into());
    }
    Ok(Expr::List(list))
}

/// The expression an operator applies to: the last one, which must be data, not an offset.
fn data_operand(list: &mut Vec<Expr>, op: &str) -> Result<Expr, String> {
    match list.pop() {
        None => Err(format!("{op} must follow an expression")),
        Some(e) if !is_data(&e) => Err(format!("{op} cannot be applied to this type of expression")),
        Some(e) => Ok(e),
    }
}

/// `N:M]`, `:M]`, `N:]` or `:]` at `s[i..]` (after the `[`): N (0 if none), M (-1 if none)
/// and the length read.
fn slice_bounds(s: &[u8], i: usize) -> Option<(i64, i64, usize)> {
    let (n, mut at) = match scan_i64(s, i) {
        Some((n, len)) => (n, i + len),
        None => (0, i),
    };
    if s.get(at) != Some(&b':') {
        return None;
    }
    at += 1;
    let m = match scan_i64(s, at) {
        Some((m, len)) => {
            at += len;
            m
        }
        None => -1,
    };
    (s.get(at) == Some(&b']')).then_some((n, m, at + 1 - i))
}

/// The length of a `<(SCRIPT)`'s script: up to the `)` that closes it, nested pairs skipped.
fn script_len(s: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0;
    for (len, &c) in s[i..].iter().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b')' => return (len > 0).then_some(len),
            _ => {}
        }
    }
    None
}

/// A `"string"` with C escapes (the opening quote is read already).
fn parse_string(s: &[u8], i: &mut usize) -> Result<Vec<u8>, String> {
    const UNTERMINATED: &str = "data parameter: unterminated string";
    let mut out = Vec::new();
    while *i < s.len() {
        let mut c = s[*i];
        if c == b'"' {
            *i += 1;
            return Ok(out);
        }
        if c == b'\\' {
            *i += 1;
            c = *s.get(*i).ok_or(UNTERMINATED)?;
            c = match c {
                b'a' => 7,
                b'b' => 8,
                b'f' => 0xc,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0xb,
                b'x' => {
                    let hex = s.get(*i + 1..*i + 3).ok_or(UNTERMINATED)?;
                    *i += 2;
                    let hex = std::str::from_utf8(hex)
                        .ok()
                        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                    u8::from_str_radix(
                        hex.ok_or("data: \\xNN must be followed by exactly two hexadecimal characters")?,
                        16,
                    )
                    .map_err(|e| e.to_string())?
                }
                b'0'..=b'9' | b'u' => {
                    return Err("data: string numeric and unicode sequences are not yet implemented".into())
                }
                other => other,
            };
        }
        out.push(c);
        *i += 1;
    }
    Err(UNTERMINATED.into())
}

/// `le16:N`, `be32:N`... up to the next white space: the word's bytes.
fn parse_word(s: &[u8], i: &mut usize) -> Result<Vec<u8>, String> {
    let start = *i;
    while *i < s.len() && !is_space(s[*i]) {
        *i += 1;
    }
    let word = String::from_utf8_lossy(&s[start..*i]).into_owned();
    let (prefix, number) = word.split_at(word.len().min(5));
    let bad = || {
        format!(
            "data parameter: expected \"le16/32/64:\" or \"be16/32/64:\" at offset {}",
            *i
        )
    };
    let (little, width) = match prefix {
        "le16:" => (true, 2),
        "le32:" => (true, 4),
        "le64:" => (true, 8),
        "be16:" => (false, 2),
        "be32:" => (false, 4),
        "be64:" => (false, 8),
        _ => return Err(bad()),
    };
    let value = match width {
        2 => u64::from(parse_u16("data", number)?),
        4 => u64::from(parse_u32("data", number)?),
        _ => parse_u64("data", number)?,
    };
    let bytes = if little {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    };
    Ok(if little {
        bytes[..width].to_vec()
    } else {
        bytes[8 - width..].to_vec()
    })
}

/// format.c's optimize_ast.
pub fn optimize(e: Expr) -> Expr {
    match e {
        Expr::List(items) => {
            let mut list: Vec<Expr> = Vec::new();
            for item in items {
                match optimize(item) {
                    Expr::Null => {}
                    Expr::List(inner) if inner.iter().all(safe_to_inline) => list.extend(inner),
                    other => list.push(other),
                }
            }
            let mut k = 1;
            while k < list.len() {
                if let Some(combined) = combine(&list[k - 1], &list[k]) {
                    list[k - 1] = combined;
                    list.remove(k);
                } else {
                    k += 1;
                }
            }
            match list.len() {
                0 => Expr::Null,
                1 if safe_to_inline(&list[0]) => list.pop().unwrap_or(Expr::Null),
                _ => Expr::List(list),
            }
        }
        Expr::Assign(name, inner) => Expr::Assign(name, Box::new(optimize(*inner))),
        Expr::Repeat(_, 0) => Expr::Null,
        Expr::Repeat(inner, n) => {
            let inner = optimize(*inner);
            if n == 1 || inner == Expr::Null {
                return inner;
            }
            match inner {
                Expr::Repeat(e, m) => Expr::Repeat(e, n.wrapping_mul(m)),
                Expr::Fill(b, m) => Expr::Fill(b, n.wrapping_mul(m)),
                Expr::String(s) if n <= 4 && s.len() <= 512 => Expr::String(s.repeat(n as usize)),
                other => match single_byte(&other) {
                    Some(b) => Expr::Fill(b, n),
                    None => Expr::Repeat(Box::new(other), n),
                },
            }
        }
        Expr::Slice(inner, n, m) => {
            if n == m as u64 {
                return Expr::Null;
            }
            let inner = optimize(*inner);
            let whole = m == -1;
            let to = |len: u64| if whole { len } else { m as u64 };
            let fits = |len: u64| (m >= 0 && n <= m as u64 && m as u64 <= len) || (whole && n <= len);
            match inner {
                Expr::Null if m == 0 || (n == 0 && whole) => Expr::Null,
                Expr::Byte(b) if m == 1 || (n == 0 && whole) => Expr::Byte(b),
                Expr::String(s) if fits(s.len() as u64) => {
                    let end = to(s.len() as u64);
                    if end - n == 1 {
                        Expr::Byte(s[n as usize])
                    } else {
                        Expr::String(s[n as usize..end as usize].to_vec())
                    }
                }
                Expr::Fill(b, len) if fits(len) => {
                    let end = to(len);
                    if end - n == 1 {
                        Expr::Byte(b)
                    } else {
                        Expr::Fill(b, end - n)
                    }
                }
                other => Expr::Slice(Box::new(other), n, m),
            }
        }
        Expr::String(s) if s.is_empty() => Expr::Null,
        Expr::String(s) if s.len() > 1 && s.iter().all(|&b| b == s[0]) => Expr::Fill(s[0], s.len() as u64),
        Expr::Fill(_, 0) => Expr::Null,
        other => other,
    }
}

/// Whether flattening `e` into the list around it keeps its meaning (names and offsets are
/// scoped to their list).
fn safe_to_inline(e: &Expr) -> bool {
    !matches!(
        e,
        Expr::Assign(..) | Expr::Name(_) | Expr::AbsOffset(_) | Expr::RelOffset(_) | Expr::AlignOffset(_)
    )
}

/// The byte of an expression that is one constant byte.
fn single_byte(e: &Expr) -> Option<u8> {
    match e {
        Expr::Byte(b) => Some(*b),
        Expr::List(l) if l.len() == 1 => single_byte(&l[0]),
        Expr::String(s) if s.len() == 1 => Some(s[0]),
        Expr::Fill(b, 1) => Some(*b),
        Expr::Repeat(e, 1) => single_byte(e),
        _ => None,
    }
}

/// format.c's exprs_can_combine: two adjacent constants as one.
fn combine(a: &Expr, b: &Expr) -> Option<Expr> {
    Some(match (a, b) {
        (Expr::Byte(x), Expr::Byte(y)) if x == y => Expr::Fill(*x, 2),
        (Expr::Byte(x), Expr::Byte(y)) => Expr::String(vec![*x, *y]),
        (Expr::Byte(x), Expr::String(s)) => Expr::String([&[*x], &s[..]].concat()),
        (Expr::Byte(x), Expr::Fill(y, n)) if x == y => Expr::Fill(*y, n + 1),
        (Expr::String(s), Expr::Byte(y)) => Expr::String([&s[..], &[*y]].concat()),
        (Expr::String(s), Expr::String(t)) => Expr::String([&s[..], &t[..]].concat()),
        (Expr::Fill(x, n), Expr::Byte(y)) if x == y => Expr::Fill(*x, n + 1),
        (Expr::Fill(x, n), Expr::Fill(y, m)) if x == y => Expr::Fill(*x, n + m),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoVars;
    impl Variables for NoVars {
        fn get(&self, _: &str) -> Option<&str> {
            None
        }
    }

    fn ast(s: &str) -> Expr {
        optimize(parse(s, &NoVars).unwrap())
    }

    #[test]
    fn bytes_run_together_and_zeros_become_fills() {
        assert_eq!(ast("1 2 3"), Expr::String(vec![1, 2, 3]));
        assert_eq!(ast("0 0 0"), Expr::Fill(0, 3));
        assert_eq!(ast("0xff*16"), Expr::Fill(0xff, 16));
        assert_eq!(ast("\"aa\""), Expr::Fill(b'a', 2));
        assert_eq!(ast("08"), Expr::String(vec![0, 8]));
    }

    #[test]
    fn offsets_stay_in_their_scope() {
        assert_eq!(
            ast("1 @0x1fe 0x55 0xaa"),
            Expr::List(vec![
                Expr::Byte(1),
                Expr::AbsOffset(0x1fe),
                Expr::String(vec![0x55, 0xaa])
            ])
        );
        assert_eq!(
            ast("(@4 1)*2"),
            Expr::Repeat(Box::new(Expr::List(vec![Expr::AbsOffset(4), Expr::Byte(1)])), 2)
        );
    }

    #[test]
    fn words_and_strings() {
        assert_eq!(ast("le32:1"), Expr::String(vec![1, 0, 0, 0]));
        assert_eq!(ast("be16:0x1234"), Expr::String(vec![0x12, 0x34]));
        assert_eq!(ast("\"a\\x41\\n\""), Expr::String(b"aA\n".to_vec()));
        assert!(parse("le24:1", &NoVars).is_err());
        assert!(parse("le16:65536", &NoVars).is_err());
    }

    #[test]
    fn slices_of_constants_shrink() {
        assert_eq!(ast("\"hello\"[1:3]"), Expr::String(b"el".to_vec()));
        assert_eq!(ast("\"hello\"[4:]"), Expr::Byte(b'o'));
        assert_eq!(ast("(0xff*100)[:10]"), Expr::Fill(0xff, 10));
        assert_eq!(ast("\"hi\"[1:1]"), Expr::Null);
    }

    #[test]
    fn errors_are_format_cs() {
        for (bad, why) in [
            ("256", "range 0..255"),
            ("(1", "unmatched '('"),
            ("1)", "unmatched ')'"),
            ("@^3", "power of 2"),
            ("*2", "must follow"),
            ("@1*2", "cannot be applied"),
            ("$x", "variable not found"),
            ("\"abc", "unterminated"),
            ("1 z", "offset 2"),
        ] {
            let e = parse(bad, &NoVars).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
