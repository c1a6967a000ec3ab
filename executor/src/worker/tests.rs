use super::*;

/// An answer that finds no room at the client is sent again until it goes out (nothing of a
/// `QueueFull` try went out); any other outcome ends the tries at once.
#[test]
fn answers_are_tried_again_while_the_client_has_no_room() {
    let mut tries = 0;
    let sent = until_room(|| {
        tries += 1;
        if tries < 5 {
            Err(TransportError::QueueFull)
        } else {
            Ok(tries)
        }
    });
    assert_eq!(sent.expect("sent at last"), 5);
    let mut tries = 0;
    let gone = until_room(|| -> Result<(), TransportError> {
        tries += 1;
        if tries < 3 {
            Err(TransportError::QueueFull)
        } else {
            Err(TransportError::PeerGone { endpoint: 0 })
        }
    });
    assert!(matches!(gone, Err(TransportError::PeerGone { .. })));
    assert_eq!(tries, 3);
}
