-- Wake the certificate outbox consumer as soon as a domain event commits (it polls once a
-- second as a fallback).
CREATE FUNCTION domain_events_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('burrow_domain_events', NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER domain_events_notify AFTER INSERT ON domain_events
    FOR EACH ROW EXECUTE FUNCTION domain_events_notify();
