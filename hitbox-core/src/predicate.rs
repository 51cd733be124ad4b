//! Decisions: is this request (or response) cacheable?

/// A synchronous yes-or-no decision about a subject `S`.
///
/// A [`Predicate`] is a small synchronous value with one method. Predicates
/// combine with [`Predicate::and`], [`Predicate::or`] and [`Predicate::not`]
/// into plain structs, so a whole decision tree is one value that costs no
/// allocation per call. Any `Fn(&S) -> bool` closure is a predicate.
///
/// ```
/// use hitbox_core::Predicate;
///
/// struct Request { method: &'static str, path: &'static str }
///
/// let is_get = |r: &Request| r.method == "GET";
/// let is_api = |r: &Request| r.path.starts_with("/api/");
/// let is_admin = |r: &Request| r.path.starts_with("/api/admin");
/// let cacheable = is_get.and(is_api).and(is_admin.not());
///
/// assert!(cacheable.check(&Request { method: "GET", path: "/api/users" }));
/// assert!(!cacheable.check(&Request { method: "GET", path: "/api/admin/users" }));
/// assert!(!cacheable.check(&Request { method: "POST", path: "/api/users" }));
/// ```
pub trait Predicate<S: ?Sized> {
    /// Whether `subject` passes.
    fn check(&self, subject: &S) -> bool;

    /// Passes when both `self` and `other` pass (`other` is not consulted
    /// when `self` fails).
    fn and<P>(self, other: P) -> And<Self, P>
    where
        Self: Sized,
        P: Predicate<S>,
    {
        And(self, other)
    }

    /// Passes when `self` or `other` passes (`other` is not consulted when
    /// `self` passes).
    fn or<P>(self, other: P) -> Or<Self, P>
    where
        Self: Sized,
        P: Predicate<S>,
    {
        Or(self, other)
    }

    /// Passes when `self` fails.
    fn not(self) -> Not<Self>
    where
        Self: Sized,
    {
        Not(self)
    }
}

impl<S: ?Sized, F> Predicate<S> for F
where
    F: Fn(&S) -> bool,
{
    fn check(&self, subject: &S) -> bool {
        self(subject)
    }
}

/// Both predicates; see [`Predicate::and`].
#[derive(Debug, Clone, Copy)]
pub struct And<A, B>(pub A, pub B);

impl<S: ?Sized, A: Predicate<S>, B: Predicate<S>> Predicate<S> for And<A, B> {
    fn check(&self, subject: &S) -> bool {
        self.0.check(subject) && self.1.check(subject)
    }
}

/// Either predicate; see [`Predicate::or`].
#[derive(Debug, Clone, Copy)]
pub struct Or<A, B>(pub A, pub B);

impl<S: ?Sized, A: Predicate<S>, B: Predicate<S>> Predicate<S> for Or<A, B> {
    fn check(&self, subject: &S) -> bool {
        self.0.check(subject) || self.1.check(subject)
    }
}

/// The negation of a predicate; see [`Predicate::not`].
#[derive(Debug, Clone, Copy)]
pub struct Not<A>(pub A);

impl<S: ?Sized, A: Predicate<S>> Predicate<S> for Not<A> {
    fn check(&self, subject: &S) -> bool {
        !self.0.check(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn combinators_follow_boolean_logic() {
        let even = |n: &i32| n % 2 == 0;
        let positive = |n: &i32| *n > 0;
        let p = even.and(positive);
        assert!(p.check(&2));
        assert!(!p.check(&-2));
        assert!(!p.check(&3));
        let q = even.or(positive);
        assert!(q.check(&-2));
        assert!(q.check(&3));
        assert!(!q.check(&-3));
        assert!(even.not().check(&3));
        assert!(!even.not().check(&4));
    }

    #[test]
    fn combinators_short_circuit() {
        let calls = Cell::new(0);
        let counted = |_: &i32| {
            calls.set(calls.get() + 1);
            true
        };
        let never = |_: &i32| false;
        let always = |_: &i32| true;
        assert!(!never.and(&counted).check(&0));
        assert!(always.or(&counted).check(&0));
        assert_eq!(calls.get(), 0);
        assert!(always.and(&counted).check(&0));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn predicates_are_clone_and_unsized_subjects_work() {
        let starts = |s: &str| s.starts_with('a');
        let combined = starts.and(|s: &str| s.len() > 2);
        let copy = combined;
        assert!(copy.check("abc"));
        assert!(!combined.check("ab"));
    }
}
