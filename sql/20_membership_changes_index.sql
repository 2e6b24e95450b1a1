-- Every incremental /sync asks whether any membership changed in the user's rooms between two
-- events-stream positions (device list "changed"/"left" rules). With (room_id, stream) that is
-- one index probe per room instead of reading each room's whole membership history. The new
-- index also serves the lookups by room alone, so the old one goes.
CREATE INDEX room_memberships_by_room_stream ON room_memberships (room_id, event_stream_ordering);
DROP INDEX room_memberships_by_room;
