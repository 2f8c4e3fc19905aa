from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)], render_kw={"autocomplete": "username"})
    password = PasswordField(
        "Password", validators=[DataRequired(), Length(max=200)], render_kw={"autocomplete": "current-password"}
    )
    next = HiddenField()
    submit = SubmitField("Sign in")


class PostForm(FlaskForm):
    """An empty form: a CSRF token for POST-only buttons (logout, shift, ...)."""


class ChangePasswordForm(FlaskForm):
    current = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=200)], render_kw={"autocomplete": "current-password"}
    )
    password = PasswordField(
        "New password",
        validators=[DataRequired(), Length(min=10, max=200, message="Use at least 10 characters (and at most 200).")],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        "Repeat the new password",
        validators=[DataRequired(), EqualTo("password", "The two passwords differ.")],
        render_kw={"autocomplete": "new-password"},
    )
