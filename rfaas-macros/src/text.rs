//! Canonical text of type tokens, for signatures and fingerprints: the same string however the
//! source is spaced, so that reformatting a library (rustfmt) does not change its fingerprints.
//!
//! The text depends only on the sequence of tokens, never on where they stood in the source or
//! on their `Spacing`: punctuation is split into single characters, then the few
//! multi-character operators are glued back by a fixed table ([`GLUED`]), and the space
//! between two atoms is decided by their kinds alone (rustfmt's style for the shapes types
//! take: `&[u8]`, `[f64; 3]`, `Result<u32, E>`, `<T as Tr>::X`, `[u8; { 2 + 2 }]`).

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::ToTokens;

/// Multi-character operators, longest first.
const GLUED: [&str; 9] = ["..=", "::", "->", "=>", "==", "!=", "<=", ">=", ".."];

/// Binary operators written with a space on each side (also `&`, `*` and `-` between
/// operands).
const SPACED: [&str; 13] = [
    "=", "==", "!=", "<=", ">=", "->", "=>", "+", "/", "%", "^", "|", "@",
];

/// Operators that can stand before an operand (`&T`, `*const T`, `-1`, `!0`, `?Sized`).
const PREFIX: [&str; 8] = ["&", "*", "-", "!", "?", "#", "$", "~"];

/// Keywords, which are not operands: `*const *const u8`, `&mut [u8]`.
const KEYWORDS: [&str; 21] = [
    "as", "const", "dyn", "else", "extern", "fn", "for", "if", "impl", "in", "let", "match",
    "move", "mut", "ref", "return", "static", "type", "unsafe", "use", "where",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    /// An identifier, a literal or a lifetime (`'a`).
    Word(String),
    /// Punctuation: one character or a [`GLUED`] operator; `prefix` when it stands before its
    /// operand (`&T`, not `a & b`).
    Op {
        op: String,
        prefix: bool,
    },
    Open(Delimiter),
    Close(Delimiter),
}

/// The canonical text of `tokens`.
pub(crate) fn canonical(tokens: &impl ToTokens) -> String {
    let mut raw = Vec::new();
    flatten(tokens.to_token_stream(), &mut raw);
    let atoms = glue(raw);
    let mut out = String::new();
    let mut prev: Option<&Atom> = None;
    for atom in &atoms {
        if let Some(a) = prev
            && space(a, atom)
        {
            out.push(' ');
        }
        match atom {
            Atom::Word(w) => out.push_str(w),
            Atom::Op { op, .. } => out.push_str(op),
            Atom::Open(d) => out.push_str(match d {
                Delimiter::Parenthesis => "(",
                Delimiter::Bracket => "[",
                Delimiter::Brace => "{",
                Delimiter::None => "",
            }),
            Atom::Close(d) => out.push_str(match d {
                Delimiter::Parenthesis => ")",
                Delimiter::Bracket => "]",
                Delimiter::Brace => "}",
                Delimiter::None => "",
            }),
        }
        prev = Some(atom);
    }
    out
}

/// Token trees as atoms, punctuation one character at a time; invisible groups (from
/// `macro_rules!` fragments) are flattened.
fn flatten(tokens: TokenStream, out: &mut Vec<Atom>) {
    let mut iter = tokens.into_iter().peekable();
    while let Some(tt) = iter.next() {
        match tt {
            TokenTree::Ident(i) => out.push(Atom::Word(i.to_string())),
            TokenTree::Literal(l) => out.push(Atom::Word(l.to_string())),
            TokenTree::Punct(p) if p.as_char() == '\'' => match iter.peek() {
                Some(TokenTree::Ident(i)) => {
                    out.push(Atom::Word(format!("'{i}")));
                    iter.next();
                }
                _ => out.push(op("'")),
            },
            TokenTree::Punct(p) => out.push(op(&p.as_char().to_string())),
            TokenTree::Group(g) => match g.delimiter() {
                Delimiter::None => flatten(g.stream(), out),
                d => {
                    out.push(Atom::Open(d));
                    flatten(g.stream(), out);
                    out.push(Atom::Close(d));
                }
            },
        }
    }
}

fn op(s: &str) -> Atom {
    Atom::Op {
        op: s.to_owned(),
        prefix: false,
    }
}

/// Whether `a` ends an operand, so that an operator after it is binary (or postfix).
fn ends_operand(a: Option<&Atom>) -> bool {
    match a {
        Some(Atom::Word(w)) => !KEYWORDS.contains(&w.as_str()),
        Some(Atom::Close(_)) => true,
        _ => false,
    }
}

/// Glues runs of single-character operators by [`GLUED`] (longest match first) and marks
/// prefix operators.
fn glue(raw: Vec<Atom>) -> Vec<Atom> {
    let mut out: Vec<Atom> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if let Atom::Op { op: first, .. } = &raw[i] {
            // The run of single characters starting here (at most 3 matter).
            let run: String = raw[i..]
                .iter()
                .take(3)
                .map_while(|a| match a {
                    Atom::Op { op, .. } if op.len() == 1 => Some(op.as_str()),
                    _ => None,
                })
                .collect();
            let glued = GLUED
                .iter()
                .find(|g| run.starts_with(*g))
                .map_or(first.clone(), |g| (*g).to_owned());
            let prefix = PREFIX.contains(&glued.as_str()) && !ends_operand(out.last());
            i += glued.len();
            out.push(Atom::Op { op: glued, prefix });
        } else {
            out.push(raw[i].clone());
            i += 1;
        }
    }
    out
}

fn is_op(a: &Atom, set: &[&str]) -> bool {
    matches!(a, Atom::Op { op, .. } if set.contains(&op.as_str()))
}

fn is_prefix(a: &Atom) -> bool {
    matches!(a, Atom::Op { prefix: true, .. })
}

/// A binary operator written with spaces around it.
fn is_spaced(a: &Atom) -> bool {
    match a {
        Atom::Op { op, prefix: false } => {
            SPACED.contains(&op.as_str()) || ["&", "*", "-"].contains(&op.as_str())
        }
        _ => false,
    }
}

/// Whether a space goes between `a` and the atom `b` after it.
fn space(a: &Atom, b: &Atom) -> bool {
    use Atom::{Close, Open, Word};
    use Delimiter::{Brace, Bracket, Parenthesis};
    match (a, b) {
        (Open(Brace), Close(Brace)) => false,
        (Open(Parenthesis | Bracket), _) | (_, Close(Parenthesis | Bracket)) => false,
        (Open(Brace), _) | (_, Close(Brace)) => true,
        _ if is_op(b, &[",", ";", ":", ">"]) && is_op(a, &[","]) => false,
        _ if is_op(b, &[",", ";", ":"]) => false,
        _ if is_op(a, &[",", ";", ":"]) => true,
        _ if is_op(a, &["::", ".", "..", "..=", "'"])
            || is_op(b, &["::", ".", "..", "..=", "'"]) =>
        {
            false
        }
        _ if is_prefix(a) => false,
        // `*const *const u8`, `&mut &u8`: a prefix operator after a keyword.
        (Word(_) | Close(_), _) if is_prefix(b) => true,
        // A macro's `!`, a postfix `?`.
        _ if is_op(b, &["!", "?"]) => false,
        _ if is_spaced(a) || is_spaced(b) => true,
        _ if is_op(a, &["<"]) || is_op(b, &["<", ">"]) => false,
        _ if is_op(a, &[">"]) => matches!(b, Word(_) | Open(Brace)),
        (Word(w), Open(Parenthesis | Bracket)) => w != "fn" && KEYWORDS.contains(&w.as_str()),
        (_, Open(Brace)) => true,
        (Word(_) | Close(_), Word(_)) => true,
        _ => false,
    }
}
