DROP TABLE IF EXISTS relay.portal_sessions;
