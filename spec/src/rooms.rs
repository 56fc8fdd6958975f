//! Room rules every hearth and client applies the same way to a room's events.

use std::collections::BTreeSet;

use crate::{RoomKind, UserId};

/// Keeps a group that has members from being left without an admin: when none of `admins` is
/// a member any more, the member whose user id sorts first becomes one. Every hearth of the room
/// applies the same events in the same order, so each makes the same choice without a word
/// about it on the wire. Returns who was made admin.
pub fn keep_an_admin(admins: &mut BTreeSet<UserId>, members: &BTreeSet<UserId>) -> Option<UserId> {
    admins.retain(|a| members.contains(a));
    if !admins.is_empty() {
        return None;
    }
    let first = members.first()?.clone();
    admins.insert(first.clone());
    Some(first)
}

/// The admins of a room whose hearth stored none (rooms made before groups had admins): the
/// creator while a member, else the member first by id. A direct chat has none.
pub fn first_admins(
    kind: RoomKind,
    creator: Option<&UserId>,
    members: &BTreeSet<UserId>,
) -> BTreeSet<UserId> {
    let mut admins = BTreeSet::new();
    if kind == RoomKind::Direct {
        return admins;
    }
    admins.extend(creator.cloned());
    keep_an_admin(&mut admins, members);
    admins
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        format!("@{name}:x.test").parse().unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<UserId> {
        names.iter().map(|n| user(n)).collect()
    }

    #[test]
    fn a_group_with_members_always_has_an_admin_and_the_first_by_id_steps_in() {
        let mut admins = set(&["b"]);
        assert_eq!(keep_an_admin(&mut admins, &set(&["a", "b", "c"])), None);
        assert_eq!(admins, set(&["b"]));
        assert_eq!(
            keep_an_admin(&mut admins, &set(&["c", "a"])),
            Some(user("a"))
        );
        assert_eq!(admins, set(&["a"]));
        let mut admins = set(&["a", "d"]);
        assert_eq!(keep_an_admin(&mut admins, &set(&["d", "e"])), None);
        assert_eq!(admins, set(&["d"]), "an admin who left is no longer one");
        assert_eq!(keep_an_admin(&mut admins, &BTreeSet::new()), None);
        assert!(admins.is_empty());
    }

    #[test]
    fn rooms_without_stored_admins_start_from_their_creator() {
        let members = set(&["c", "b"]);
        assert_eq!(
            first_admins(RoomKind::Group, Some(&user("c")), &members),
            set(&["c"])
        );
        assert_eq!(
            first_admins(RoomKind::Group, Some(&user("a")), &members),
            set(&["b"])
        );
        assert_eq!(first_admins(RoomKind::Group, None, &members), set(&["b"]));
        assert!(first_admins(RoomKind::Direct, Some(&user("c")), &members).is_empty());
    }
}
