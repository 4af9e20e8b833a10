-- One row per member: how many days they checked in, and the last. The inbox and outbox come with the kit.
CREATE TABLE visits (
    program_id text NOT NULL,
    member_id  text NOT NULL,
    days       integer NOT NULL,
    last_day   date NOT NULL,
    PRIMARY KEY (program_id, member_id)
);
