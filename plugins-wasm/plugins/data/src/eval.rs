//! Evaluating an expression into a sparse array, as format.c's evaluate does: bytes land at
//! the current offset, a nested expression is evaluated into an array of its own and copied
//! in whole (its holes overwrite as zeros), and the size is the furthest offset reached.
//! Plain Rust, unit-tested natively.

use std::rc::Rc;

use crate::expr::Expr;
use crate::sparse::Sparse;

/// How `<FILE` is read: the file's bytes from `skip` up to `end` (None: to the end).
pub trait Files {
    fn read(&self, name: &str, skip: u64, end: Option<u64>) -> Result<Vec<u8>, String>;
}

/// A name bound by `expr -> \NAME`, with the names bound before it (its scope).
struct Binding {
    name: String,
    expr: Expr,
    outer: Scope,
}

type Scope = Option<Rc<Binding>>;

/// Evaluate `root` into `disk` from offset 0; returns the size it reaches.
pub fn evaluate(root: &Expr, disk: &mut Sparse, files: &dyn Files) -> Result<u64, String> {
    let (mut offset, mut size) = (0, 0);
    eval(&None, root, disk, &mut offset, &mut size, files)?;
    Ok(size)
}

/// `e` evaluated into an array of its own: the array and its size.
fn nested(scope: &Scope, e: &Expr, files: &dyn Files) -> Result<(Sparse, u64), String> {
    let mut a = Sparse::default();
    let (mut offset, mut size) = (0, 0);
    eval(scope, e, &mut a, &mut offset, &mut size, files)?;
    Ok((a, size))
}

fn no_script() -> String {
    "data: <(SCRIPT) is not supported: a component cannot run programs (there is no shell in the sandbox)".into()
}

fn eval(
    scope: &Scope,
    root: &Expr,
    a: &mut Sparse,
    offset: &mut u64,
    size: &mut u64,
    files: &dyn Files,
) -> Result<(), String> {
    let mut scope = scope.clone();
    let items = match root {
        Expr::List(items) => &items[..],
        other => std::slice::from_ref(other),
    };
    for e in items {
        match e {
            Expr::Null => {}
            Expr::Byte(b) => {
                a.write(&[*b], *offset);
                *offset += 1;
            }
            Expr::AbsOffset(n) => *offset = *n,
            Expr::RelOffset(n) => {
                if *n < 0 && n.unsigned_abs() > *offset {
                    return Err(format!(
                        "data parameter @-{} must not be larger than the current offset {}",
                        n.unsigned_abs(),
                        *offset
                    ));
                }
                *offset = offset.wrapping_add(*n as u64);
            }
            Expr::AlignOffset(n) => *offset = offset.wrapping_add(n - 1) & !(n - 1),
            Expr::File(name) => store(a, offset, &files.read(name, 0, None)?),
            Expr::Script(_) => return Err(no_script()),
            Expr::String(s) => store(a, offset, s),
            Expr::Fill(b, n) => {
                a.fill(*b, *n, *offset);
                *offset += n;
            }
            Expr::Assign(name, expr) => {
                scope = Some(Rc::new(Binding {
                    name: name.clone(),
                    expr: (**expr).clone(),
                    outer: scope,
                }));
            }
            Expr::Name(name) => {
                let mut at = &scope;
                let binding = loop {
                    match at {
                        Some(b) if b.name == *name => break b,
                        Some(b) => at = &b.outer,
                        None => return Err(format!("\\{name} not defined")),
                    }
                };
                // The expression sees the names of where it was bound, not of here.
                let (a2, size2) = nested(&binding.outer, &binding.expr, files)?;
                a.blit(&a2, size2, 0, *offset);
                *offset += size2;
            }
            Expr::Slice(inner, n, m) if matches!(**inner, Expr::File(_)) => {
                let Expr::File(name) = &**inner else { unreachable!() };
                // <FILE[N:M] reads only what it needs (a file may be endless).
                if (*m >= 0 && *n > *m as u64) || *m < -2 {
                    return Err("<FILE[N:M] does not describe a valid slice".into());
                }
                let end = match *m {
                    -1 => None,
                    m if m < 0 => Some(*n),
                    m => Some(m as u64),
                };
                store(a, offset, &files.read(name, *n, end)?);
            }
            Expr::Slice(inner, 0, _) if matches!(**inner, Expr::Script(_)) => return Err(no_script()),
            Expr::List(_) => {
                let (a2, size2) = nested(&scope, e, files)?;
                a.blit(&a2, size2, 0, *offset);
                *offset += size2;
            }
            Expr::Repeat(inner, n) => {
                let (a2, size2) = nested(&scope, inner, files)?;
                for _ in 0..*n {
                    a.blit(&a2, size2, 0, *offset);
                    *offset += size2;
                }
            }
            Expr::Slice(inner, n, m) => {
                let (a2, size2) = nested(&scope, inner, files)?;
                let m = if *m < 0 { size2 } else { *m as u64 };
                if *n > size2 || m > size2 || *n > m {
                    return Err("[N:M] does not describe a valid slice".into());
                }
                a.blit(&a2, m - n, *n, *offset);
                *offset += m - n;
            }
        }
        *size = (*size).max(*offset);
    }
    Ok(())
}

fn store(a: &mut Sparse, offset: &mut u64, bytes: &[u8]) {
    a.write(bytes, *offset);
    *offset += bytes.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{optimize, parse, Variables};

    struct None_;
    impl Variables for None_ {
        fn get(&self, _: &str) -> Option<&str> {
            None
        }
    }
    impl Files for None_ {
        fn read(&self, name: &str, skip: u64, end: Option<u64>) -> Result<Vec<u8>, String> {
            let all = name.as_bytes();
            let end = end.map_or(all.len(), |e| (e as usize).min(all.len()));
            Ok(all[(skip as usize).min(end)..end].to_vec())
        }
    }

    fn disk(s: &str) -> (Vec<u8>, u64) {
        let mut a = Sparse::default();
        let size = evaluate(&optimize(parse(s, &None_).unwrap()), &mut a, &None_).unwrap();
        let mut buf = vec![0; size as usize];
        a.read(&mut buf, 0);
        (buf, size)
    }

    #[test]
    fn the_man_pages_examples() {
        let (b, size) = disk("0 1 2 3 @0x1fe 0x55 0xaa");
        assert_eq!(size, 512);
        assert_eq!(b[..4], [0, 1, 2, 3]);
        assert_eq!(b[510..], [0x55, 0xaa]);
        assert_eq!(
            disk("0 1 2 3 @^0x200 @-2 le16:0xaa55"),
            disk("0 1 2 3 @0x1fe 0x55 0xaa")
        );
        let (b, size) = disk("( 0x55 0xAA )*2048");
        assert_eq!(size, 4096);
        assert!(b.chunks(2).all(|c| c == [0x55, 0xaa]));
        let (b, _) = disk(r"( 0x55 0xAA ) -> \boot ( @0x1fe \boot ) -> \sector \sector \sector");
        assert_eq!(b.len(), 1024);
        assert_eq!(b[1022..], [0x55, 0xaa]);
    }

    #[test]
    fn a_nested_expression_overwrites_with_its_holes() {
        assert_eq!(disk("1 2 3 @0 (@2 9)").0, [0, 0, 9]);
        assert_eq!(disk("1 2 3 @0 @2 9").0, [1, 2, 9]);
    }

    #[test]
    fn slices_and_names() {
        assert_eq!(disk("\"hello\"[1:3]").0, b"el");
        assert_eq!(disk("(1 2 3 4)[1:]").0, [2, 3, 4]);
        assert_eq!(disk("<abcdef[2:4]").0, b"cd");
        assert_eq!(disk("<abc").0, b"abc");
        let mut a = Sparse::default();
        assert!(evaluate(&optimize(parse(r"\x", &None_).unwrap()), &mut a, &None_).is_err());
        assert!(evaluate(&optimize(parse("(1 2)[3:1]", &None_).unwrap()), &mut a, &None_).is_err());
        assert!(evaluate(&optimize(parse("1 @-2", &None_).unwrap()), &mut a, &None_).is_err());
    }
}
