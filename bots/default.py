"""The deployment ``mailbot serve`` runs when no ``--app`` is given."""

from bots.comments import CommentsBot
from mailbot import Mailbot

app = Mailbot(bots=[CommentsBot])
