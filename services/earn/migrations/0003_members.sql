-- Members as enrolled (for the birthday bonus), and the birthdays already paid.
CREATE TABLE members (
    program_id      text        NOT NULL,
    member_id       text        NOT NULL,
    birthday        text,                 -- MM-DD
    birthday_set_at timestamptz,          -- when it was set or last changed (a fresh birthday does not pay)
    enrolled_at     timestamptz NOT NULL,
    PRIMARY KEY (program_id, member_id)
);
CREATE INDEX members_birthday ON members (program_id, birthday) WHERE birthday IS NOT NULL;

CREATE TABLE birthdays_paid (
    program_id text    NOT NULL,
    member_id  text    NOT NULL,
    year       integer NOT NULL,
    PRIMARY KEY (program_id, member_id, year)
);
