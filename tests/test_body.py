"""The grammar of the mail body (torokiki_pipe.stages.s5_understand.body)."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torokiki_pipe.stages.s5_understand.body import (QUOTE_PAIRS, BodyError, ParsedBody, Tag, own_words, parse_body,
                                                    unquote)

KNOWN = frozenset({"text", "tags", "objective", "location"})


def values(parsed):
    return {tag.name: tag.value for tag in parsed.tags}


def only_error(parsed):
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0]


# --- the example from the brief, and real clients ----------------------------


def test_example_from_a_phone():
    body = (
        "Hi there,\n"
        "text: 'These routes are now plied by a\n"
        "petrol based bus service.'\n"
        'tags: "lambtonquay, transport bus"   # a comment\n'
        "location: “123 Lambton Quay”\n"
        "Sent from my iPhone\n"
    )
    parsed = parse_body(body, KNOWN)
    assert parsed == ParsedBody(
        tags=(
            Tag("text", "These routes are now plied by a\npetrol based bus service.", 2),
            Tag("tags", "lambtonquay, transport bus", 4),
            Tag("location", "123 Lambton Quay", 5),
        ),
        errors=(),
    )


def test_iphone_smart_quotes():
    body = "text: ‘Kia ora’\ntags: “bus, train”\n\nSent from my iPhone"
    assert values(parse_body(body, KNOWN)) == {"text": "Kia ora", "tags": "bus, train"}


def test_german_and_french_phone_quotes():
    body = "text: „Guten Tag“\ntags: ‚bus‘\nlocation: «Cuba St»"
    assert values(parse_body(body, KNOWN)) == {
        "text": "Guten Tag",
        "tags": "bus",
        "location": "Cuba St",
    }


def test_quote_pairs_have_the_four_styles():
    for opener, closer in [("'", "'"), ('"', '"'), ("‘", "’"), ("“", "”")]:
        assert QUOTE_PAIRS[opener] == closer


def test_each_opener_needs_its_own_closer():
    # “ is not closed by " and ' is not closed by ’.
    parsed = parse_body('text: “a " b”\ntags: \'c ’ d\'', KNOWN)
    assert values(parsed) == {"text": 'a " b', "tags": "c ’ d"}


def test_multi_line_value_with_other_quote_characters():
    body = (
        "text: \"She said 'kia ora' and “hello”,\n"
        "then ‘goodbye’ — it's fine.\n"
        "# not a comment in here\n"
        "> nor a quote\"\n"
        "tags: 'x'"
    )
    parsed = parse_body(body, KNOWN)
    assert parsed.errors == ()
    assert values(parsed)["text"] == (
        "She said 'kia ora' and “hello”,\nthen ‘goodbye’ — it's fine.\n"
        "# not a comment in here\n> nor a quote"
    )
    assert parsed.tags[1] == Tag("tags", "x", 5)


def test_value_keeps_inner_white_space():
    assert values(parse_body("text: '  two  spaces  '", KNOWN)) == {"text": "  two  spaces  "}


def test_empty_quoted_value_is_a_value():
    assert parse_body("text: ''", KNOWN) == ParsedBody((Tag("text", "", 1),), ())


# --- escapes -------------------------------------------------------------------


def test_backslash_escapes_the_closing_quote():
    assert values(parse_body(r"text: 'It\'s nice'", KNOWN)) == {"text": "It's nice"}
    assert values(parse_body(r"text: ‘It\’s nice’", KNOWN)) == {"text": "It’s nice"}
    assert values(parse_body(r'text: "say \"hi\""', KNOWN)) == {"text": 'say "hi"'}


def test_double_backslash_is_a_backslash():
    assert values(parse_body(r"text: 'C:\\temp\\'", KNOWN)) == {"text": "C:\\temp\\"}


def test_other_backslashes_stay():
    assert values(parse_body(r"text: 'a\nb \" \d'", KNOWN)) == {"text": r"a\nb \" \d"}


# --- tag lines and prose -----------------------------------------------------


def test_tag_names_are_case_insensitive():
    parsed = parse_body("TEXT: 'a'\nTags : 'b'\nLocation\u00a0: Cuba St", KNOWN)
    assert values(parsed) == {"text": "a", "tags": "b", "location": "Cuba St"}


def test_known_tags_are_matched_in_any_case():
    assert values(parse_body("text: 'a'", frozenset({"Text"}))) == {"text": "a"}


def test_prose_lines_are_ignored():
    body = (
        "Dear Kiri:\n"
        "Note: see below\n"
        "Meeting at 10:30, ok?\n"
        "Time: 10:30\n"
        "http://example.org/a:b\n"
        "text: 'the tag'\n"
        "Sent from my iPhone"
    )
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "the tag", 6),), ())


def test_unquoted_value_is_the_rest_of_the_line():
    parsed = parse_body("location: 123 Lambton Quay   # home\ntext: It's nice", KNOWN)
    assert parsed.errors == ()
    assert values(parsed) == {"location": "123 Lambton Quay", "text": "It's nice"}


def test_unknown_tag_with_quoted_value_is_an_error():
    parsed = parse_body("Hi\nfoo: 'bar'\ntext: 'ok'", KNOWN)
    assert values(parsed) == {"text": "ok"}
    error = only_error(parsed)
    assert error.line == 2
    assert error.message == (
        "unknown tag 'foo'; the tags are: location, objective, tags, text"
    )


def test_unknown_tag_value_is_skipped_even_over_lines():
    # Its value may contain what looks like tags; they are not read.
    parsed = parse_body("Title: 'a\ntext: b'\ntags: 'c'", KNOWN)
    assert values(parsed) == {"tags": "c"}
    assert [e.line for e in parsed.errors] == [1]


def test_tag_without_value():
    parsed = parse_body("text: 'a'\nlocation:\nSent from my iPhone", KNOWN)
    error = only_error(parsed)
    assert error.line == 2
    assert "tag without a value" in error.message
    assert "location: '" in error.message  # shows how to write it


def test_tag_with_only_a_comment_has_no_value_and_explains_hashes():
    error = only_error(parse_body("tags: #bus #train", KNOWN))
    assert "tag without a value" in error.message
    assert "comment" in error.message and "'#bus'" in error.message


def test_quoted_value_may_start_on_the_next_line():
    parsed = parse_body("text:\n\n  'on the next line'\ntags: 'b'", KNOWN)
    assert parsed == ParsedBody((Tag("text", "on the next line", 1), Tag("tags", "b", 4)), ())


# --- comments ------------------------------------------------------------------


def test_comments():
    body = (
        "# text: 'commented out'\n"
        "   # an indented comment\n"
        "text: 'a # is kept in a value'  # but this is a comment\n"
        "tags: 'b'#tight comment"
    )
    parsed = parse_body(body, KNOWN)
    assert parsed.errors == ()
    assert values(parsed) == {"text": "a # is kept in a value", "tags": "b"}


# --- what may follow a closing quote -------------------------------------------


def test_several_tags_on_one_line():
    parsed = parse_body("text: 'a' tags: \"b\"  location: Cuba St # c", KNOWN)
    assert parsed.errors == ()
    assert parsed.tags == (Tag("text", "a", 1), Tag("tags", "b", 1), Tag("location", "Cuba St", 1))


def test_apostrophe_in_single_quotes_is_explained():
    parsed = parse_body("Hi\ntext: 'It's nice'\ntags: 'bus'", KNOWN)
    assert values(parsed) == {"tags": "bus"}  # the cut-short value is not kept
    error = only_error(parsed)
    assert error.line == 2
    assert "line" not in error.message      # the problem list says the line, once (reply.problems_text)
    assert "s nice'" in error.message
    assert "\\'" in error.message and '"…"' in error.message


def test_smart_apostrophe_in_smart_quotes_is_explained():
    # iPhone turns both the quotes and the apostrophe into curly ones.
    error = only_error(parse_body("text: ‘It’s nice’", KNOWN))
    assert "\\’" in error.message and '"…"' in error.message


def test_apostrophe_hint_suggests_single_quotes_for_double():
    error = only_error(parse_body('text: "say "hi" now"', KNOWN))
    assert "'…'" in error.message


def test_text_after_a_value_is_an_error_naming_the_line():
    parsed = parse_body("text: 'a'\ntags: 'b' and more\nlocation: 'c'", KNOWN)
    assert values(parsed) == {"text": "a", "location": "c"}
    error = only_error(parsed)
    assert error.line == 2 and "line 2" not in error.message and "and more" in error.message
    assert "#" in error.message


def test_left_over_text_after_multi_line_value_names_its_last_line():
    error = only_error(parse_body("text: 'a\nb' c", KNOWN))
    assert error.line == 2


def test_prose_after_a_value_is_not_a_tag():
    error = only_error(parse_body("text: 'a' note: hi", KNOWN))
    assert "note: hi" in error.message


# --- unterminated values and duplicates --------------------------------------


def test_unterminated_value_names_the_line_where_it_started():
    body = "Hi\n\ntext: 'These routes\nare now plied\n\nSent from my iPhone"
    parsed = parse_body(body, KNOWN)
    assert parsed.tags == ()
    error = only_error(parsed)
    assert error.line == 3
    assert error.message == (
        "the value of 'text' starts with ' but never ends; "
        "close it with ' (write \\' for a ' inside it)"
    )


def test_unterminated_smart_quote_names_its_closer():
    error = only_error(parse_body("tags: 'ok'\ntext: “open", KNOWN))
    assert error.line == 2
    assert "starts with “" in error.message and "close it with ”" in error.message


def test_unterminated_value_swallows_the_rest():
    # Nothing after an open quote can be trusted to be a tag.
    parsed = parse_body('text: "a\ntags: \'b\'\nlocation: Cuba St', KNOWN)
    assert parsed.tags == ()
    assert [e.line for e in parsed.errors] == [1]


def test_duplicate_tag_names_both_lines():
    parsed = parse_body("text: 'first'\ntags: 'x'\nTEXT: 'second'", KNOWN)
    assert values(parsed) == {"text": "first", "tags": "x"}
    error = only_error(parsed)
    assert error.line == 3                  # said by the problem list
    assert "first on line 1" in error.message and "line 3" not in error.message


def test_errors_come_in_line_order():
    body = "text: 'a' b\nfoo: 'x'\ntext: 'c'\nlocation:\ntags: 'open"
    parsed = parse_body(body, KNOWN)
    assert [e.line for e in parsed.errors] == [1, 2, 4, 5]


# --- quoted replies, attributions, signatures, forwards ----------------------


def test_quoted_reply_lines_are_ignored():
    body = "text: 'new'\n> text: 'old'\n  > foo: 'unterminated\n>> tags: 'x'\ntags: 'y'"
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "new", 1), Tag("tags", "y", 5)), ())


def test_gmail_attribution_wrapped_over_two_lines():
    body = (
        "text: 'reply on top'\n"
        "\n"
        "On Tue, 3 Mar 2026 at 10:02, Kiri <k@x>\n"
        "wrote:\n"
        "\n"
        "> text: 'the old one\n"
        "> tags: 'old'\n"
    )
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "reply on top", 1),), ())


@pytest.mark.parametrize(
    "attribution",
    [
        "On Tue, 3 Mar 2026 at 10:02, Kiri <k@x> wrote:",
        "On 3 Mar 2026, at 10:02, Kiri <k@x> wrote:",
        "Am Di., 3. März 2026 um 10:02 Uhr schrieb Kiri <k@x>:",
        "Le mar. 3 mars 2026 à 10:02, Kiri <k@x> a écrit :",
        "El mar, 3 mar 2026 a las 10:02, Kiri (<k@x>) escribió:",
        "Il giorno mar 3 mar 2026 alle ore 10:02 Kiri <k@x> ha scritto:",
        "Op di 3 mrt. 2026 om 10:02 schreef Kiri <k@x>:",
        "Em ter., 3 de mar. de 2026 às 10:02, Kiri <k@x> escreveu:",
        "Den tis 3 mars 2026 kl 10:02 skrev Kiri <k@x>:",
    ],
)
def test_attributions_in_several_languages(attribution):
    body = f"text: 'new'\n{attribution}\n> old\n"
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "new", 1),), ())


def test_attribution_that_looks_like_a_tag_is_ignored_before_a_quote():
    # Some clients put the sender's display name first; a name like this
    # would otherwise be an unknown tag.
    line = "Kiri: 'Re: bus stop' wrote:"
    assert parse_body(f"text: 'a'\n{line}\n> old", KNOWN).errors == ()
    # Without the quoted block it is not an attribution.
    assert parse_body(f"text: 'a'\n{line}\nmore", KNOWN).errors != ()


def test_attribution_never_hides_a_known_tag():
    body = "objective: what Kiri wrote:\n> old text\ntext: 'a'\nKiri\nwrote:\n> old"
    parsed = parse_body(body, KNOWN)
    assert values(parsed) == {"objective": "what Kiri wrote:", "text": "a"}


@pytest.mark.parametrize("separator", ["-- ", "--", "--\u00a0", "-- \t"])
def test_everything_after_a_signature_is_ignored(separator):
    body = f"text: 'a'\n{separator}\nKiri Te Rangi\ntags: 'in the signature'\nfoo: 'x'\ntext: 'open"
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "a", 1),), ())


def test_three_dashes_are_not_a_signature():
    assert values(parse_body("text: 'a'\n---\ntags: 'b'", KNOWN)) == {"text": "a", "tags": "b"}


@pytest.mark.parametrize(
    "separator",
    [
        "-----Original Message-----",
        "  -----Original Message-----  ",
        "-----Ursprüngliche Nachricht-----",
        "________________________________",
        "---------- Forwarded message ---------",
        "-------- Forwarded Message --------",
        "-------- Original Message --------",
        "Begin forwarded message:",
    ],
)
def test_everything_after_outlook_and_forward_separators_is_ignored(separator):
    body = (
        f"text: 'mine'\n\n{separator}\nFrom: Kiri <k@x>\nSent: Tuesday\n"
        f"Subject: Re: 'bus'\n\ntags: 'theirs'\ntext: 'unterminated"
    )
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "mine", 1),), ())


def test_separators_inside_an_open_value_are_part_of_it():
    value = (
        "first\n-- \n> quoted?\nOn Tue, Kiri wrote:\n-----Original Message-----\n"
        "________________________________\nBegin forwarded message:\nlast"
    )
    body = f"text: '{value}'\ntags: 'after'"
    parsed = parse_body(body, KNOWN)
    assert parsed.errors == ()
    assert values(parsed) == {"text": value, "tags": "after"}
    assert parsed.tags[1].line == 9


# --- the writer's own words in a reply, as clients write the quote ------------------

OUR_TEXT = "> Here is the Torokiki content you asked for:\n>   http://torokiki.net/image/1/response\n"


@pytest.mark.parametrize("attribution", [
    "On Tue, 14 May 2024 at 08:12, Torokiki Gateway <\ngateway@torokiki.net> wrote:",
    "On Tue, 14 May 2024 at 08:12, Torokiki Gateway <gateway@torokiki.net>\nwrote:",
    "Am Di., 14. Mai 2024 um 08:12 Uhr schrieb Torokiki Gateway <\ngateway@torokiki.net>:",
    "Le mar. 14 mai 2024 à 08:12, Torokiki Gateway <gateway@torokiki.net> a\nécrit :",
    "El mar, 14 may 2024 a las 08:12, Torokiki Gateway (<\ngateway@torokiki.net>) escribió:",
    "Op di 14 mei 2024 om 08:12 schreef Torokiki Gateway <\ngateway@torokiki.net>:",
    "Den tis 14 maj 2024 kl 08:12 skrev Torokiki Gateway <\ngateway@torokiki.net>:",
    "Den tir. 14. maj 2024 kl. 08.12 skrev Torokiki Gateway <\ngateway@torokiki.net>:",
    "tir. 14. mai 2024 kl. 08:12 skrev Torokiki Gateway <\ngateway@torokiki.net>:",
    "ti 14. toukok. 2024 klo 8.12 Torokiki Gateway (gateway@torokiki.net)\nkirjoitti:",
    "Em ter., 14 de mai. de 2024 às 08:12, Torokiki Gateway <\ngateway@torokiki.net> escreveu:",
    "Il giorno mar 14 mag 2024 alle ore 08:12 Torokiki Gateway <\ngateway@torokiki.net> ha scritto:",
    "Op 14 mei 2024 om 08:12 heeft Torokiki Gateway <gateway@torokiki.net> het\nvolgende geschreven:",
    "02.04.2012 14:20 пользователь \"Torokiki\" <\ngateway@torokiki.net> написал:",
    "2014-10-17 11:28 GMT+03:00 Torokiki <\ngateway@torokiki.net>:",
    "вт, 14 мая 2024 г. в 08:12, Torokiki <gateway@torokiki.net>:",
])
def test_a_wrapped_attribution_in_each_language_goes_with_its_quote(attribution):
    body = f"My grandad drove it.\ntags: tram\n\n{attribution}\n\n{OUR_TEXT}> tags: 'quoted'\n"
    parsed = parse_body(body, KNOWN)
    assert (parsed.words, values(parsed), parsed.errors) == ("My grandad drove it.", {"tags": "tram"}, ())


@pytest.mark.parametrize("attribution", [
    "On Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:",
    "Am 14.05.2024 um 08:12 schrieb Torokiki <gateway@torokiki.net>:",
])
def test_the_writers_line_just_above_an_attribution_stays(attribution):
    body = f"Lovely photo!\n{attribution}\n{OUR_TEXT}"
    assert own_words(body, KNOWN) == "Lovely photo!"


@pytest.mark.parametrize("attribution", [
    "On Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:",
    "Le mar. 14 mai 2024 à 08:12, Torokiki <gateway@torokiki.net> a écrit :",
])
def test_an_unmarked_quote_after_an_attribution_is_not_the_writers(attribution):
    body = f"Lovely photo!\n\n{attribution}\n\n{OUR_TEXT.replace('> ', '')}tags: 'quoted'\n"
    parsed = parse_body(body, KNOWN)
    assert (parsed.words, parsed.tags) == ("Lovely photo!", ())


def test_a_sentence_ending_in_wrote_is_the_writers_own():
    # No client's shape (no "On"-word and date) and no quote after it: the writer's words.
    body = "My grandad wrote:\nthe trams shook the mirrors."
    assert own_words(body, KNOWN) == body


def test_a_letter_the_writer_copies_is_their_words():
    # "On" and a date, but no time and no address: not a client's attribution.
    body = "On 3 May 1952, my grandad wrote:\nDear Mum, the trams shook the windows again today.\ntags: letters"
    parsed = parse_body(body, KNOWN)
    assert (parsed.words, values(parsed)) == (body.rsplit("\n", 1)[0], {"tags": "letters"})


def test_bottom_posting_below_a_marked_quote_stays():
    body = f"On Tue, 14 May 2024 at 08:12, Torokiki <gateway@torokiki.net> wrote:\n{OUR_TEXT}\nMy words below."
    assert own_words(body, KNOWN) == "My words below."


@pytest.mark.parametrize("separator", [
    "-----Original Message-----", "-----Ursprüngliche Nachricht-----", "-----Message d'origine-----",
    "-----Mensaje original-----", "-----Messaggio originale-----", "-----Oorspronkelijk bericht-----",
    "-----Ursprungligt meddelande-----", "-----Oprindelig meddelelse-----", "-----Alkuperäinen viesti-----",
    "----- Original Message -----", "-------- Original message --------", "________________________________",
])
def test_words_end_at_the_original_message_separators(separator):
    body = (f"My grandad drove it.\n\n{separator}\nFrom: Torokiki <gateway@torokiki.net>\n"
            "Sent: Tuesday, 14 May 2024 08:12\nSubject: Torokiki content\n\nHere is the content\ntags: 'quoted'")
    parsed = parse_body(body, KNOWN)
    assert (parsed.words, parsed.tags) == ("My grandad drove it.", ())


@pytest.mark.parametrize("block", [
    "From: Torokiki <gateway@torokiki.net>\nSent: Tuesday, 14 May 2024 08:12",
    "From: Torokiki\nTo: Kiri\nCc: \nSent: Tuesday",                          # Yahoo, Zimbra
    "*From:* Torokiki <gateway@torokiki.net>\n*Sent:* Tuesday",               # Gmail's text of Outlook's HTML
    "Von: Torokiki\nGesendet: Dienstag, 14. Mai 2024 08:12",
    "De : Torokiki\nEnvoyé : mardi 14 mai 2024 08:12",
    "De: Torokiki\nEnviado el: martes, 14 de mayo de 2024 8:12",
    "Da: Torokiki\nInviato: martedì 14 maggio 2024 08:12",
    "Van: Torokiki\nVerzonden: dinsdag 14 mei 2024 08:12",
    "Från: Torokiki\nSkickat: den 14 maj 2024 08:12",
    "Fra: Torokiki\nSendt: 14. mai 2024 08:12",
    "Lähettäjä: Torokiki\nLähetetty: tiistai 14. toukokuuta 2024 8.12",
])
def test_words_end_at_outlooks_header_block(block):
    body = f"My grandad drove it.\n\n{block}\nSubject: Torokiki content\n\nHere is the content\ntags: 'quoted'"
    parsed = parse_body(body, KNOWN)
    assert (parsed.words, parsed.tags) == ("My grandad drove it.", ())


@pytest.mark.parametrize("line", [
    "Sent from my iPhone", "Sent from my Samsung Galaxy smartphone.", "Sent from Mail for Windows",
    "Sent from Yahoo Mail on Android", "Sent with Sparrow", "Get Outlook for iOS", "Get Outlook for Android",
    "Outlook für iOS herunterladen", "Obtenir Outlook pour iOS", "Von meinem iPhone gesendet",
    "Envoyé de mon iPhone", "Envoyé depuis mon iPhone", "Enviado desde mi iPhone", "Enviado do meu iPhone",
    "Inviato da iPhone", "Verzonden vanaf mijn iPhone", "Verstuurd vanaf mijn iPhone",
    "Skickat från min iPhone", "Sendt fra min iPhone", "Lähetetty iPhonesta",
])
def test_the_line_a_phone_adds_is_not_the_writers(line):
    assert own_words(f"My grandad drove it.\n\n{line}\n", KNOWN) == "My grandad drove it."


def test_everything_after_a_plain_signature_is_left_out():
    body = "My grandad drove it.\n\n-- \nKiri Tane\nWellington\n\nOn Tue, Torokiki wrote:\n> quoted"
    assert own_words(body, KNOWN) == "My grandad drove it."


@pytest.mark.parametrize("line", ["Von meinem X" + " " * 200_000 + "z", "Hi" + " " * 200_000 + "x y z w"])
def test_a_long_line_costs_linear_time(line):
    import time

    start = time.perf_counter()
    own_words(line, KNOWN)
    assert time.perf_counter() - start < 1


# --- line endings and odd characters -------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings(newline):
    body = newline.join(["Hi", "text: 'a", "b'", "tags: 'c'", "foo: 'd'"])
    parsed = parse_body(body, KNOWN)
    assert parsed.tags == (Tag("text", "a\nb", 2), Tag("tags", "c", 4))
    assert [e.line for e in parsed.errors] == [5]


def test_bom_and_non_breaking_spaces():
    body = "\ufeff\u00a0text:\u00a0'a'\u00a0#\u00a0note\n\u202ftags\u00a0:\u00a0“b”\u00a0"
    assert parse_body(body, KNOWN) == ParsedBody((Tag("text", "a", 1), Tag("tags", "b", 2)), ())


def test_empty_and_blank_bodies():
    assert parse_body("", KNOWN) == ParsedBody((), ())
    assert parse_body("\n\n  \n", KNOWN) == ParsedBody((), ())
    assert parse_body("text: 'a'", frozenset()).tags == ()


def test_results_are_frozen():
    parsed = parse_body("text: 'a'", KNOWN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.tags[0].value = "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        BodyError(1, "x").line = 2


# --- unquote ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject, expected",
    [
        ("  'http://example.org/a?b=c'  ", "http://example.org/a?b=c"),
        ("“http://example.org/”", "http://example.org/"),
        (r"'It\'s'", "It's"),
        (r"'a\\'", "a\\"),
        ("''", ""),
        ("http://example.org/", "http://example.org/"),
        ("  plain words ", "plain words"),
        ("'a' and 'b'", "'a' and 'b'"),
        ("'unterminated", "'unterminated"),
        ("'", "'"),
        ("“wrong closer\"", "“wrong closer\""),
        ("", ""),
    ],
)
def test_unquote(subject, expected):
    assert unquote(subject) == expected


# --- properties --------------------------------------------------------------------

# Characters that matter to the grammar, to reach its corners more often
# than arbitrary text does.
GRAMMAR_CHARS = st.sampled_from(
    list("'\"‘’“”„«»\\#:> -_\n\r\t\u00a0\ufeffxt") + ["text", "tags", "foo", "wrote:", "-- ", "\n> "]
)
GRAMMAR_TEXT = st.lists(GRAMMAR_CHARS, max_size=60).map("".join)


@pytest.mark.integration  # slow
@given(st.one_of(st.text(), GRAMMAR_TEXT), st.frozensets(st.text(max_size=8), max_size=5))
def test_parse_body_never_raises(text, known):
    parsed = parse_body(text, known)
    normalised_lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    lowered = {k.lower() for k in known}
    for tag in parsed.tags:
        assert tag.name in lowered
        assert 1 <= tag.line <= normalised_lines
    for error in parsed.errors:
        assert 1 <= error.line <= normalised_lines and error.message
    assert [e.line for e in parsed.errors] == sorted(e.line for e in parsed.errors)


@given(GRAMMAR_TEXT)
def test_parse_body_never_raises_with_known_tags(text):
    parse_body(text, KNOWN)


def render(name, value, opener):
    closer = QUOTE_PAIRS[opener]
    escaped = value.replace("\\", "\\\\").replace(closer, "\\" + closer)
    return f"{name}: {opener}{escaped}{closer}"


def normalise(value):
    return value.replace("\r\n", "\n").replace("\r", "\n")


@given(
    st.dictionaries(
        st.sampled_from(sorted(KNOWN)),
        st.tuples(st.text(), st.sampled_from(sorted(QUOTE_PAIRS))),
    ),
    st.sampled_from(["", "  ", "\u00a0", "\t"]),
    st.booleans(),
)
def test_round_trip(pairs, indent, upper):
    lines = [indent + render(name.upper() if upper else name, value, opener)
             for name, (value, opener) in pairs.items()]
    body = "Kia ora,\n" + "\n".join(lines) + "\n-- \nKiri\ntext: 'in the signature'\n"
    parsed = parse_body(body, KNOWN)
    assert parsed.errors == ()
    assert values(parsed) == {name: normalise(value) for name, (value, _) in pairs.items()}
    # Line numbers count the lines as written, values spanning lines included.
    expected_line = 2
    for tag, line in zip(parsed.tags, lines):
        assert tag.line == expected_line
        expected_line += normalise(line).count("\n") + 1


@given(st.text(), st.sampled_from(sorted(QUOTE_PAIRS)), st.sampled_from(["", " ", "\t\n", "\u00a0"]))
def test_unquote_round_trip(value, opener, space):
    closer = QUOTE_PAIRS[opener]
    escaped = value.replace("\\", "\\\\").replace(closer, "\\" + closer)
    assert unquote(f"{space}{opener}{escaped}{closer}{space}") == value


@given(st.text())
def test_unquote_never_raises(text):
    result = unquote(text)
    assert isinstance(result, str)
    if text.strip()[:1] not in QUOTE_PAIRS:
        assert result == text.strip()
