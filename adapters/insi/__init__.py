"""INSi clients behind hub.identity.insi.InsiResolver."""
