//! Room rules every hearth and client computes the same way from a room's events.

use crate::{RoomKind, UserId};

/// The one member of a group who may remove others: its creator while a member, and once the
/// creator has gone, the remaining member whose user id sorts first. Every hearth of the room
/// applies the same events in the same order, so each names the same admin without a word
/// about it on the wire. A direct chat has none (nobody is removed from one; either leaves).
pub fn group_admin<'a>(
    kind: RoomKind,
    creator: Option<&UserId>,
    members: impl IntoIterator<Item = &'a UserId>,
) -> Option<UserId> {
    if kind == RoomKind::Direct {
        return None;
    }
    let mut first: Option<&UserId> = None;
    for member in members {
        if Some(member) == creator {
            return Some(member.clone());
        }
        if first.is_none_or(|f| member.as_str() < f.as_str()) {
            first = Some(member);
        }
    }
    first.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        format!("@{name}:x.test").parse().unwrap()
    }

    #[test]
    fn the_creator_while_a_member_then_the_first_member_by_id() {
        let (a, b, c) = (user("a"), user("b"), user("c"));
        let all = [c.clone(), a.clone(), b.clone()];
        assert_eq!(
            group_admin(RoomKind::Group, Some(&b), &all),
            Some(b.clone())
        );
        assert_eq!(
            group_admin(RoomKind::Group, Some(&b), &[c.clone(), a.clone()]),
            Some(a.clone())
        );
        assert_eq!(
            group_admin(RoomKind::Group, None, std::slice::from_ref(&c)),
            Some(c)
        );
        assert_eq!(group_admin(RoomKind::Group, Some(&b), &[]), None);
        assert_eq!(group_admin(RoomKind::Direct, Some(&a), &all), None);
    }
}
